"""What a run and a set of runs report: the model card and metrics.json facts (``card``), the console's config tree
and summary (``console``), reading run folders (``runs``), the comparison (``compare``) with its plots (``plots``),
and the HTML pages (``pages``)."""
