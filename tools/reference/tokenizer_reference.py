#!/usr/bin/env python3
"""Reference token ids for lowbit's tokenizer tests, produced by independent implementations.

How the committed files in tests/data/ were produced (run from the repository root):

    python3 tools/reference/tokenizer_reference.py \
        --gguf ~/.cache/lowbit/SmolLM2-135M-Instruct.Q4_1.gguf --data ../shared/data --out tests/data

* SmolLM2 (byte-level BPE): the vocabulary (tokenizer.ggml.tokens), merges (tokenizer.ggml.merges) and
  token types are read from the GGUF with the `gguf` package (PyPI, 0.x), then handed to the Hugging
  Face `tokenizers` package (PyPI, 0.23.x) as models.BPE(vocab, merges) with the pre-tokenizer SmolLM2's
  own tokenizer.json declares: Sequence([Digits(individual_digits=True), ByteLevel(add_prefix_space=False,
  use_regex=True)]). Tokens of type CONTROL/USER_DEFINED are registered as special tokens. No BOS is
  added (the GGUF says tokenizer.ggml.add_bos_token = false).
* tok512 (SentencePiece): the `sentencepiece` package (PyPI, 0.2.x) loads models/tok512.model and
  encodes with its defaults (no BOS). Note that this model's normalizer removes extra spaces, which
  llama2.c's run.c does not do.

Inputs: the first 200 KiB of text/wikitext2_test.txt (cut back to a UTF-8 character boundary) and
tests/data/tokenizer_edge_cases.txt. Output: one line of space-separated ids per input file.
"""
import argparse
import pathlib

WIKITEXT_BYTES = 200 * 1024


def inputs(data_dir: pathlib.Path, out_dir: pathlib.Path):
    raw = (data_dir / "text/wikitext2_test.txt").read_bytes()[:WIKITEXT_BYTES]
    while raw and (raw[-1] & 0xC0) == 0x80:  # never cut inside a UTF-8 character
        raw = raw[:-1]
    if raw and raw[-1] >= 0xC0:
        raw = raw[:-1]
    edge = (out_dir / "tokenizer_edge_cases.txt").read_bytes()
    return {"wikitext2_200k": raw.decode("utf-8"), "edge_cases": edge.decode("utf-8")}


def smollm2_tokenizer(gguf_path: str):
    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    reader = GGUFReader(gguf_path)

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    types_field = reader.fields["tokenizer.ggml.token_type"]
    types = [int(types_field.parts[i][0]) for i in types_field.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    specials = [t for t, ty in zip(tokens, types) if ty in (3, 4)]
    tok.add_special_tokens(specials)
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="tests/data")
    args = ap.parse_args()
    data_dir, out_dir = pathlib.Path(args.data), pathlib.Path(args.out)
    texts = inputs(data_dir, out_dir)

    bpe = smollm2_tokenizer(args.gguf)
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(data_dir / "models/tok512.model"))
    for name, text in texts.items():
        ids = bpe.encode(text, add_special_tokens=False).ids
        assert bpe.decode(ids, skip_special_tokens=False) == text, name
        (out_dir / f"smollm2_{name}.ids.txt").write_text(" ".join(map(str, ids)) + "\n")
        sp_ids = sp.encode(text)
        (out_dir / f"tok512_spm_{name}.ids.txt").write_text(" ".join(map(str, sp_ids)) + "\n")
        print(f"{name}: {len(text.encode())} bytes, smollm2 {len(ids)} ids, tok512 sentencepiece {len(sp_ids)} ids")


if __name__ == "__main__":
    main()
