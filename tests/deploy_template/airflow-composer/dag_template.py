"""Stand-in for dlt's Airflow DAG template: dlt deploy copies this file unchanged to
dags/dag_<pipeline name>.py, for the user to fill in (see the README, "Deploy on a schedule")."""
