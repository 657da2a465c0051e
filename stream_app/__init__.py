"""Recommender with autoencoder-computed ID vectors, served as a Faust stream on Kafka."""

__version__ = "0.1.0"
