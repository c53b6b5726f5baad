"""Retraining as one job: `sightline retrain` (job), `--submit` (Ray Jobs API) and
`sightline schedule` (APScheduler cron ticks)."""
