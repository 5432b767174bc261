"""fedprune's lab: experiments, the study runner, simulation drivers, summaries and plots.

Not part of the Flower app (the FAB leaves it out) and not needed to use the
strategies: it runs and reports the project's own studies.

* :mod:`fedprune_lab.experiments`: experiment and study files (``conf/``);
* :mod:`fedprune_lab.simulation`: an in-process Flower simulation of one experiment;
* :mod:`fedprune_lab.run` (``fedprune-run``) and :mod:`fedprune_lab.study`
  (``fedprune-study``): run one experiment / a whole study, resumable;
* :mod:`fedprune_lab.report` (``fedprune-summary``): tables and plots from results;
* :mod:`fedprune_lab.scoreboard` (``fedprune-scoreboard``): the suite FedPrune must top;
* :mod:`fedprune_lab.configdoc`: ``docs/configuration.md`` from ``pyproject.toml``;
* :mod:`fedprune_lab.weight_stats`, :mod:`fedprune_lab.class_weight`: analyses
  that ``docs/results.md`` cites.
"""
