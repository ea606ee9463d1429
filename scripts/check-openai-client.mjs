// The checks scripts/check-openai-client runs with the official `openai` npm client against
// examples/server (started by that script). Environment: BASE_URL (http://HOST:PORT/v1),
// API_KEY, MODEL_NAME. Prints one line per check; exits 1 if any fails.
import OpenAI from 'openai';

const baseURL = process.env.BASE_URL;
const apiKey = process.env.API_KEY;
const model = process.env.MODEL_NAME;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });

let failures = 0;
async function check(name, fn) {
  try {
    const detail = await fn();
    console.log(`ok    ${name}${detail ? ` (${detail})` : ''}`);
  } catch (e) {
    failures++;
    console.log(`FAIL  ${name}: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`);
  }
}
function expect(cond, message) {
  if (!cond) throw new Error(message);
}
const show = (s) => JSON.stringify(s.length > 40 ? s.slice(0, 40) + '...' : s);

const prompt = 'The quick brown fox jumps over the lazy dog. Once upon a time';
const greedy = { model, prompt, temperature: 0, max_tokens: 16, seed: 7 };
let greedyText = null;

await check('models.list', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  expect(ids.length === 1 && ids[0] === model, `expected [${model}], got ${JSON.stringify(ids)}`);
  return ids.join(', ');
});

await check('completions.create', async () => {
  const r = await client.completions.create(greedy);
  expect(r.object === 'text_completion', `object ${r.object}`);
  expect(r.choices.length === 1, `${r.choices.length} choices`);
  const c = r.choices[0];
  expect(typeof c.text === 'string' && c.text.length > 0, `text ${JSON.stringify(c.text)}`);
  expect(c.finish_reason === 'length', `finish_reason ${c.finish_reason}`);
  expect(r.usage.completion_tokens === 16, `usage.completion_tokens ${r.usage.completion_tokens}`);
  expect(r.usage.prompt_tokens > 0 && r.usage.total_tokens === r.usage.prompt_tokens + 16, 'usage totals');
  greedyText = c.text;
  return `${r.usage.prompt_tokens} prompt tokens, text ${show(c.text)}`;
});

await check('completions.create again: the same greedy text', async () => {
  const r = await client.completions.create(greedy);
  expect(r.choices[0].text === greedyText, `${show(r.choices[0].text)} != ${show(greedyText)}`);
});

await check('completions.create stream: deltas concatenate to the non-streamed text', async () => {
  const stream = await client.completions.create({ ...greedy, stream: true, stream_options: { include_usage: true } });
  let text = '', chunks = 0, finish = null, usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
    chunks++;
  }
  expect(text === greedyText, `${show(text)} != ${show(greedyText)}`);
  expect(finish === 'length', `finish_reason ${finish}`);
  expect(usage && usage.completion_tokens === 16, `usage ${JSON.stringify(usage)}`);
  return `${chunks} chunks`;
});

let chatText = null;
const chat = {
  model,
  messages: [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Say something about foxes.' },
  ],
  temperature: 0,
  max_tokens: 12,
  seed: 3,
};

await check('chat.completions.create', async () => {
  const r = await client.chat.completions.create(chat);
  expect(r.object === 'chat.completion', `object ${r.object}`);
  const m = r.choices[0].message;
  expect(m.role === 'assistant' && typeof m.content === 'string' && m.content.length > 0, `message ${JSON.stringify(m)}`);
  expect(r.choices[0].finish_reason === 'length', `finish_reason ${r.choices[0].finish_reason}`);
  expect(r.usage.completion_tokens === 12, `usage.completion_tokens ${r.usage.completion_tokens}`);
  chatText = m.content;
  return `content ${show(m.content)}`;
});

await check('chat.completions.create stream: deltas concatenate to the message', async () => {
  const stream = await client.chat.completions.create({ ...chat, stream: true });
  let text = '', role = null, finish = null, chunks = 0;
  for await (const chunk of stream) {
    expect(chunk.object === 'chat.completion.chunk', `object ${chunk.object}`);
    for (const c of chunk.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
    chunks++;
  }
  expect(role === 'assistant', `role ${role}`);
  expect(text === chatText, `${show(text)} != ${show(chatText)}`);
  expect(finish === 'length', `finish_reason ${finish}`);
  return `${chunks} chunks`;
});

await check('chat.completions.create stream: the helper collects the final message', async () => {
  // openai 4 has the helper under beta; later majors beside create.
  const runner = client.chat.completions.stream ? client.chat.completions.stream(chat)
                                                : client.beta.chat.completions.stream(chat);
  const final = await runner.finalChatCompletion();
  expect(final.choices[0].message.content === chatText, `${show(final.choices[0].message.content)} != ${show(chatText)}`);
});

await check('completions.create logprobs: 3', async () => {
  const r = await client.completions.create({ ...greedy, max_tokens: 8, logprobs: 3 });
  const c = r.choices[0], lp = c.logprobs;
  expect(lp, 'no logprobs');
  for (const key of ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset'])
    expect(Array.isArray(lp[key]) && lp[key].length === 8, `logprobs.${key} is not an array of 8: ${JSON.stringify(lp[key])}`);
  expect(lp.tokens.join('') === greedyText.slice(0, c.text.length) && c.text === lp.tokens.join(''),
         `tokens ${JSON.stringify(lp.tokens)} do not spell the text ${show(c.text)}`);
  for (let i = 0; i < 8; i++) {
    const top = lp.top_logprobs[i], values = Object.values(top);
    expect(values.length >= 1 && values.length <= 3, `top_logprobs[${i}] has ${values.length} entries`);
    expect(lp.token_logprobs[i] <= 0, `token_logprobs[${i}] = ${lp.token_logprobs[i]} > 0`);
    // Greedy: the chosen token is the most likely one.
    expect(Math.abs(Math.max(...values) - lp.token_logprobs[i]) < 1e-4,
           `token_logprobs[${i}] ${lp.token_logprobs[i]} is not the top ${Math.max(...values)}`);
  }
  return `tokens ${JSON.stringify(lp.tokens.slice(0, 3))}..., token_logprobs[0] ${lp.token_logprobs[0].toFixed(3)}`;
});

await check('chat.completions.create logprobs: true, top_logprobs: 2', async () => {
  const r = await client.chat.completions.create({ ...chat, logprobs: true, top_logprobs: 2 });
  const content = r.choices[0].logprobs?.content;
  expect(Array.isArray(content) && content.length === 12, `logprobs.content ${JSON.stringify(content)?.slice(0, 200)}`);
  for (const t of content) {
    expect(typeof t.token === 'string' && t.logprob <= 0 && Array.isArray(t.bytes), `entry ${JSON.stringify(t)}`);
    expect(Array.isArray(t.top_logprobs) && t.top_logprobs.length === 2, `top_logprobs ${JSON.stringify(t.top_logprobs)}`);
  }
});

await check('completions.create stop: the text ends before the stop string', async () => {
  // A stop string taken from the middle of the greedy text (avoiding U+FFFD, which stands for
  // bytes that are not UTF-8 and never matches the model's text).
  let stop = null;
  for (let k = Math.floor(greedyText.length / 2); k > 0 && !stop; k--) {
    const s = greedyText.slice(k, k + 3);
    if (s.length === 3 && !s.includes('\uFFFD') && s.trim().length > 0) stop = s;
  }
  expect(stop, `no stop string in ${show(greedyText)}`);
  const expected = greedyText.slice(0, greedyText.indexOf(stop));
  const r = await client.completions.create({ ...greedy, stop: [stop, 'never appears'] });
  expect(r.choices[0].text === expected, `${show(r.choices[0].text)} != ${show(expected)}`);
  expect(r.choices[0].finish_reason === 'stop', `finish_reason ${r.choices[0].finish_reason}`);
  const stream = await client.completions.create({ ...greedy, stop, stream: true });
  let text = '';
  for await (const chunk of stream) for (const c of chunk.choices) text += c.text;
  expect(text === expected, `streamed ${show(text)} != ${show(expected)}`);
  return `stop ${JSON.stringify(stop)}, text ${show(expected)}`;
});

await check('completions.create n: 2 with a seed: two choices', async () => {
  const r = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 1, seed: 11, n: 2 });
  expect(r.choices.length === 2 && r.choices[0].index === 0 && r.choices[1].index === 1, `${r.choices.length} choices`);
  const again = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 1, seed: 11, n: 2 });
  expect(again.choices[1].text === r.choices[1].text, 'seeded sampling is not reproducible');
});

await check('a wrong API key raises AuthenticationError (401)', async () => {
  const bad = new OpenAI({ baseURL, apiKey: 'not-the-key', maxRetries: 0 });
  try {
    await bad.completions.create(greedy);
  } catch (e) {
    expect(e instanceof OpenAI.AuthenticationError, `raised ${e?.constructor?.name}: ${e?.message}`);
    expect(e.status === 401, `status ${e.status}`);
    return e.message;
  }
  throw new Error('no error raised');
});

await check('a bad request raises BadRequestError (400)', async () => {
  try {
    await client.completions.create({ ...greedy, max_tokens: 0 });
  } catch (e) {
    expect(e instanceof OpenAI.BadRequestError, `raised ${e?.constructor?.name}: ${e?.message}`);
    expect(e.status === 400, `status ${e.status}`);
    expect(e.error?.message || e.message, 'no message');
    return e.message;
  }
  throw new Error('no error raised');
});

await check('an unknown model raises NotFoundError (404)', async () => {
  try {
    await client.completions.create({ ...greedy, model: 'no-such-model' });
  } catch (e) {
    expect(e instanceof OpenAI.NotFoundError, `raised ${e?.constructor?.name}: ${e?.message}`);
    return e.message;
  }
  throw new Error('no error raised');
});

await check('the server still answers after the errors', async () => {
  const r = await client.completions.create(greedy);
  expect(r.choices[0].text === greedyText, 'different text');
});

console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
process.exit(failures ? 1 : 0);
