"""Reports: the HTML page of a run, price, sweep or plan output directory."""
