"""LabelQL: labeling policies as code.

Policies (``.lql`` files) say which label a row gets and where it goes (done / review / manual)
from foundation-model signals stored in one DuckDB file.  The public entry points are the
``labelql`` command line and the stage modules: :mod:`labelql.store`, :mod:`labelql.ingest`,
:mod:`labelql.parser`, :mod:`labelql.checker` and :mod:`labelql.formatter`.
"""

__version__ = "0.1.0"
