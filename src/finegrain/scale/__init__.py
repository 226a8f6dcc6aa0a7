"""Batch embedding and prediction on Ray Data (`--engine ray`): the same decode, preprocessing, networks and
heads as the in-process engine, spread over a pool of model actors, written as resumable Parquet shards.

Ray is an optional extra (`pip install 'finegrain[ray]'`), imported only when a Ray job runs.
"""
