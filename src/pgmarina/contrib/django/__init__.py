"""A Django database backend: Django's own PostgreSQL backend, pooled by pgmarina.

Set ``"ENGINE": "pgmarina.contrib.django"`` and ``OPTIONS["pool"]`` in
``DATABASES``; everything else is Django's.  See :mod:`.base`.
"""
