"""Reports people read: the demo pipeline and its Markdown report, Pareto-front plots and tables."""
