"""one checkpoint's insides -> pictures and tables: its parameters by part (params), attention
maps, position pictures, the BatchNorm leak measured (norm_leak), token embeddings; inspection
ties each to the checkpoint it looks at (subject). Apart from study/: only the report uses both."""
