"""text -> tokens: tokenizers (GPT-2 via tiktoken, char, a trained byte-level BPE), the BPE
trainer, reading corpora in safe pieces, prepare (streaming, bounded memory) and the memory-mapped
token dataset that training draws batches from."""
