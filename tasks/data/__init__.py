"""Data: ingest (UCF101, HMDB51, Kinetics, CSV, folders), decode, the synthetic data set, clips."""
