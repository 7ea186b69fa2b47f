"""Pretokenize a corpus into packed ArrayRecord shards for `data.source="packed"`.

    python -m titans_jax.tools.pretokenize --inputs='corpus/*.jsonl' --text_key=text \\
        --tokenizer=sentencepiece:/models/llama2.model --seq_len=4096 --num_shards=16 \\
        --out=/data/fineweb/train

Inputs: .txt (a file is a document), .jsonl (a line is a document, its `text_key`
field), .parquet (a row is a document, streamed a row group at a time through
grain.experimental.ParquetIterDataset; needs pyarrow), or a Hugging Face dataset
prepared as TFDS ArrayRecord (a record is a document; titans_jax.data.text_sources):

    python -m titans_jax.tools.pretokenize --tfds_hf=HuggingFaceFW/fineweb-edu:sample-10BT \\
        --tfds_data_dir=/data/tfds --tfds_prepare --tfds_split='train[:99%]' \\
        --tokenizer=sentencepiece:/models/llama2.model --seq_len=4096 --num_shards=256 \\
        --out=/data/fineweb_edu/train

(--tfds_prepare downloads and prepares it first, with network, unless already prepared
in --tfds_data_dir; without it the prepared files are read offline.) Documents are
wrapped in the tokenizer's BOS / EOS (or the ids given) and packed to seq_len + 1 tokens
per row (titans_jax.data.packing); `OUT-NNNNN-of-MMMMM.array_record` shards and
`OUT.packing.json` (tokenizer, ids, counts) are written.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Iterator

from titans_jax.data import packing, text_sources
from titans_jax.data.tokenizers import load_tokenizer

SUFFIXES = (".txt", ".jsonl", ".parquet")


def read_documents(paths: list[str], text_key: str = "text") -> Iterator[str]:
  for path in paths:
    if path.endswith(".txt"):
      with open(path, encoding="utf-8") as handle:
        yield handle.read()
    elif path.endswith(".jsonl"):
      with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
          if line.strip():
            record = json.loads(line)
            if text_key not in record:
              raise ValueError(f"{path}:{number} has no field {text_key!r}; expected --text_key to "
                               f"name its text field (it has {sorted(record)})")
            yield record[text_key]
    elif path.endswith(".parquet"):
      yield from text_sources.iter_parquet_texts([path], text_key)
    else:
      raise ValueError(f"cannot read {path!r}; expected files ending in {SUFFIXES}")


def _tfds_texts(parser, args):
  """(texts, [description]) of --tfds_hf's split; errors name the missing piece."""
  repo, _, config = args.tfds_hf.partition(":")
  if not args.tfds_data_dir:
    parser.error("--tfds_hf needs --tfds_data_dir (where the dataset is, or is to be, prepared)")
  try:
    if args.tfds_prepare:
      builder = text_sources.prepare_huggingface_tfds(repo, config or None, args.tfds_data_dir,
                                                      split=args.tfds_split)
    else:
      builder = text_sources.open_prepared(repo, config or None, args.tfds_data_dir)
    text_sources.check_split(builder, args.tfds_split)
  except ValueError as error:
    parser.error(str(error))
  source = builder.as_data_source(args.tfds_split)
  description = f"tfds:{builder.info.full_name}[{args.tfds_split}] in {args.tfds_data_dir}"
  return text_sources.iter_texts(source, args.text_key), [description]


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--inputs", default="", help="files or globs, comma-separated")
  parser.add_argument("--tfds_hf", default="",
                      help="instead of --inputs: REPO_ID[:CONFIG] of a Hugging Face dataset "
                           "prepared as TFDS ArrayRecord in --tfds_data_dir (e.g. "
                           "HuggingFaceFW/fineweb-edu:sample-10BT)")
  parser.add_argument("--tfds_data_dir", default="", help="the TFDS data_dir of --tfds_hf")
  parser.add_argument("--tfds_split", default="train",
                      help="split of --tfds_hf, TFDS slicing allowed (e.g. 'train[:99%%]')")
  parser.add_argument("--tfds_prepare", action="store_true",
                      help="download and prepare --tfds_hf first (needs network and the `datasets` "
                           "package) unless it is already prepared in --tfds_data_dir")
  parser.add_argument("--out", required=True, help="output prefix (folder/name)")
  parser.add_argument("--seq_len", type=int, required=True, help="training length (rows hold +1)")
  parser.add_argument("--tokenizer", default="byte", help="byte | sentencepiece:PATH | hf:PATH")
  parser.add_argument("--text_key", default="text", help="the text field of jsonl / parquet")
  parser.add_argument("--bos_id", type=int, default=None, help="default: the tokenizer's BOS (if any)")
  parser.add_argument("--eos_id", type=int, default=None, help="default: the tokenizer's EOS (if any)")
  parser.add_argument("--num_shards", type=int, default=1)
  parser.add_argument("--align", type=int, default=1,
                      help="start documents at multiples of this (the memory chunk / MAC segment) "
                           "for training with data.reset_at_documents")
  args = parser.parse_args(argv)
  if bool(args.inputs) == bool(args.tfds_hf):
    parser.error("give exactly one of --inputs (files) and --tfds_hf (a prepared TFDS dataset)")
  if args.tfds_hf:
    texts, paths = _tfds_texts(parser, args)
  else:
    paths = sorted(path for pattern in args.inputs.split(",") if pattern
                   for path in glob.glob(os.path.expanduser(pattern)))
    if not paths:
      parser.error(f"--inputs={args.inputs!r} matches no file; expected files or globs of "
                   f"{SUFFIXES}")
    unreadable = [path for path in paths if not path.endswith(SUFFIXES)]
    if unreadable:
      parser.error(f"cannot read {unreadable[:3]}; expected files ending in {SUFFIXES}")
    texts = read_documents(paths, args.text_key)
  tokenizer = load_tokenizer(args.tokenizer)
  bos = tokenizer.bos_id if args.bos_id is None else args.bos_id
  eos = tokenizer.eos_id if args.eos_id is None else args.eos_id
  for name, value in (("bos_id", bos), ("eos_id", eos)):
    if value is not None and not 0 <= value < max(tokenizer.vocab_size, value + 1):
      parser.error(f"--{name}={value} is negative; expected a token id")
  documents = (tokenizer.encode(text) for text in texts)
  if args.align < 1 or args.seq_len % args.align:
    parser.error(f"--align={args.align} must be >= 1 and divide --seq_len={args.seq_len}")
  rows = packing.pack_documents(documents, seq_len=args.seq_len, bos_id=bos, eos_id=eos,
                                align=args.align)
  info = packing.write_shards(rows, args.out, seq_len=args.seq_len, num_shards=args.num_shards,
                              metadata={"tokenizer": args.tokenizer, "bos_id": bos, "eos_id": eos,
                                        "align": args.align,
                                        "vocab_size": max([tokenizer.vocab_size] + [
                                            i + 1 for i in (bos, eos) if i is not None]),
                                        "inputs": paths})
  print(f"{info['num_records']} rows of {args.seq_len + 1} tokens in {args.num_shards} shard(s): "
        f"{args.out}-*.array_record", file=sys.stderr)
  return info


if __name__ == "__main__":
  main()
