"""``fastclr prepare``: a data set written once for fast reading (``command.py``), as the decoded cache
(``prepare.py``) or as tar shards of encoded images (``shards.py``)."""
