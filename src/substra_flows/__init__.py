"""substra-flows: a robust Substra client, pipeline steps, and Airflow / Prefect faces."""

__version__ = "0.1.0"
