"""``eosdetect count``: a batch of images counted into an output folder, resumably.

:mod:`~eosdetect.apps.batch.run` orchestrates (:class:`~eosdetect.apps.batch.run.CountRun`);
:mod:`~eosdetect.apps.batch.naming` names each image's outputs,
:mod:`~eosdetect.apps.batch.resume` keeps the records that let a re-run skip what is done,
:mod:`~eosdetect.apps.batch.tables` renders the analyses into the files, and
:mod:`~eosdetect.apps.batch.local` (threads) or :mod:`~eosdetect.apps.batch.dask` (a cluster)
does the counting.
"""
