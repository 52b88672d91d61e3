"""Where images come from: users' folders and lists (``folders.py``, listed once by ``listing.py``),
the standard sets (``standard.py``), a prepared cache (``cache.py``) and tar shards (``shards.py``)."""
