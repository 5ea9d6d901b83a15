"""Getting data in: Parquet/CSV/Arrow ingestion, Spark and Dask publishes."""
