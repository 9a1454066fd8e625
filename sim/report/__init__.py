"""Reports: plots (DataFrame -> matplotlib Figure) and the files a run writes."""
