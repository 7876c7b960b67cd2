"""Search with predictors only: accuracy predictors, evolutionary search, NSGA-II Pareto fronts."""
