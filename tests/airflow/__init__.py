"""Tests of the Airflow provider (airflow_provider): unit, cassette and live tiers."""
