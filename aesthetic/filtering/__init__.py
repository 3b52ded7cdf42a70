"""LAION-scale filtering: score embedding shards with a predictor and export a manifest.

The pieces are separate, as in clip-retrieval: the reader finds and reads shards, the
kernel turns rows into scores, the writer owns the score files, the runner is one task per
shard, the engines decide where tasks run (local processes or Ray), and the manifest turns
score files into img2dataset input. Only the predictor format is shared with the rest of
:mod:`dreamrate.aesthetic`.
"""
