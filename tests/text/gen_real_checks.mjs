// Builds the real Llama 3 and Llama 2 tokenizers (128,256 and 32,000 tokens) from the vocabularies
// and merges the npm packages llama3-tokenizer-js and llama-tokenizer-js ship (MIT), with the
// tokenizer.json sections of tests/text/data/llama{3,2}_mini, and the ids tokenizers.js gives for
// every fixture text. Too large to commit (6 MB); the hidden test case "[real]" of test_text
// checks them when NNX_REAL_TOKENIZERS names the output directory:
//
//   cd /tmp/tokref && npm install @huggingface/tokenizers@0.2.0 llama3-tokenizer-js@1.2.0 llama-tokenizer-js@1.2.2
//   node tests/text/gen_real_checks.mjs /tmp/tokref /tmp/real_tokenizers     # from the repository root
//   NNX_REAL_TOKENIZERS=/tmp/real_tokenizers build/tests/test_text "[real]"
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const refDir = path.resolve(process.argv[2] ?? "/tmp/tokref");
const out = path.resolve(process.argv[3] ?? "/tmp/real_tokenizers");
const require = createRequire(path.join(refDir, "package.json"));
const { Tokenizer } = require("@huggingface/tokenizers");
const data = path.join(path.dirname(fileURLToPath(import.meta.url)), "data");
const fixtures = JSON.parse(fs.readFileSync(path.join(data, "fixtures.json"), "utf8"));

function write(name, json, texts) {
  fs.mkdirSync(path.join(out, name), { recursive: true });
  fs.writeFileSync(path.join(out, name, "tokenizer.json"), JSON.stringify(json));
  const hf = new Tokenizer(json, {});
  const cases = texts.map((text) => ({ text, ids: hf.encode(text).ids }));
  fs.writeFileSync(path.join(out, name, "cases.json"), JSON.stringify(cases));
  console.log(name, Object.keys(json.model.vocab).length, "tokens,", json.model.merges.length, "merges,",
    cases.length, "cases");
}

const mergesOf = (map) => [...map.entries()].sort((a, b) => a[1] - b[1]).map(([k]) => k);

// Llama 3
const l3Bundle = "node_modules/llama3-tokenizer-js/bundle/commonjs-llama3-tokenizer-with-baked-data.cjs";
const l3 = require(path.join(refDir, l3Bundle)).llama3Tokenizer;
const l3Mini = JSON.parse(fs.readFileSync(path.join(data, "llama3_mini", "tokenizer.json"), "utf8"));
const l3Vocab = {};
l3.vocabById.forEach((t, i) => { if (i < 128000) l3Vocab[t] = i; });
const l3Added = [];
for (let i = 128000; i < l3.vocabById.length; ++i)
  l3Added.push({ id: i, content: l3.vocabById[i], single_word: false, lstrip: false, rstrip: false, normalized: false,
    special: true });
const l3Json = { ...l3Mini, added_tokens: l3Added,
  model: { ...l3Mini.model, vocab: l3Vocab, merges: mergesOf(l3.merges) } };
l3Json.post_processor = JSON.parse(JSON.stringify(l3Mini.post_processor));
l3Json.post_processor.processors[1].special_tokens["<|begin_of_text|>"].ids = [128000];
write("llama3", l3Json, fixtures.llama3_mini.encode.map((c) => c.text));

// Llama 2
const l2mod = await import(path.join(refDir, "node_modules/llama-tokenizer-js/llama-tokenizer.js"));
const l2 = l2mod.default ?? new l2mod.LlamaTokenizer();
const l2Mini = JSON.parse(fs.readFileSync(path.join(data, "llama2_mini", "tokenizer.json"), "utf8"));
const l2Vocab = {};
l2.vocabById.forEach((t, i) => { l2Vocab[t] = i; });
write("llama2", { ...l2Mini, model: { ...l2Mini.model, vocab: l2Vocab, merges: mergesOf(l2.merges) } },
  fixtures.llama2_mini.encode.map((c) => c.text));
