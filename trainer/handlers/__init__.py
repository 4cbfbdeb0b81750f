"""Ignite handlers that observe the engines: TensorBoard views, graceful stop."""
