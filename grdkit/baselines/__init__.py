"""Reference baselines (GRSer, LTS); need the ``grdkit[baselines]`` extra."""
