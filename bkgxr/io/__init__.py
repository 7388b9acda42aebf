"""Input and output: the GADF store and its event files in, model files out.

``store`` (index tables -> run table), ``events`` (lazy event columns, one
dask chunk per run, through the private raw FITS reader ``_rawfits``),
``gadf`` (models Dataset -> BKG HDUs and index tables, atomic write) and
``load`` (a model file back into Datasets).
"""
