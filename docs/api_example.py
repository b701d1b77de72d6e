import gptcli

m = gptcli.load("out/demo")  # a run dir or a checkpoint; device="auto"
for piece in m.generate("ROMEO:", max_new_tokens=200, temperature=0.8, seed=1):
    print(piece, end="", flush=True)
print()

s = m.score("ROMEO:\nWhat light through yonder window breaks?")
print(f"{s.loss:.3f} nats/token, perplexity {s.perplexity:.2f}, {s.bits_per_byte:.3f} bits/byte")
