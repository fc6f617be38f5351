/**
 * TOTP (RFC 6238) with an injected clock: the accepted window, replay refusal, the provisioning URI
 * and QR code. No sleeping: time moves by setting `t`.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { normalizeTotpCode, totpCodeAt, totpProvisioning, totpUri, TotpVerifier, generateTotpSecret } from '../src/accounts/totp.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';
import { keys } from '../src/storage/keys.ts';
import { withReadAhead } from '../src/storage/read-ahead.ts';
import { connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import { startRedis } from './helpers/redis.ts';

// The start of a 30-second step, so ±30 s lands exactly on the neighbouring steps' edges.
const STEP_START = 1_800_000_000_000 - (1_800_000_000_000 % 30_000);

function clocked(start = STEP_START) {
  const clock = { t: start };
  const store = new MemoryStore({ now: () => clock.t });
  const totp = new TotpVerifier(store, { now: () => clock.t });
  return { clock, store, totp };
}

let accounts = 0;
const newAccount = () => `acct-${(accounts += 1)}`;

describe('TOTP codes', () => {
  test('RFC 6238 Appendix B: SHA-1 test vectors (the 8-digit values, last 6 digits)', async () => {
    // The RFC's key is the ASCII "12345678901234567890"; in base32 that is:
    const secret = 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ';
    for (const [seconds, expected] of [[59, '94287082'], [1111111109, '07081804'], [1111111111, '14050471'], [1234567890, '89005924'], [2000000000, '69279037']] as const) {
      assert.equal(await totpCodeAt(secret, seconds * 1000), expected.slice(2), `T=${seconds}`);
    }
    // And our own HOTP computation agrees, so the library is not checked only against itself.
    const counter = Buffer.alloc(8);
    counter.writeBigUInt64BE(BigInt(Math.floor(59 / 30)));
    const mac = createHmac('sha1', '12345678901234567890').update(counter).digest();
    const offset = mac[19]! & 0xf;
    const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
    assert.equal(String(code).padStart(6, '0'), '287082');
  });

  test('codes are accepted in their step and one step either side (±30 s), refused at ±60 s', async () => {
    const secret = generateTotpSecret();
    const code = await totpCodeAt(secret, STEP_START);
    const cases: [number, boolean][] = [
      [-60_000, false], // two steps early
      [-30_001, false],
      [-30_000, true], // the step before the code's (the phone is fast)
      [-1, true],
      [0, true],
      [29_999, true],
      [30_000, true], // the step after (the phone is slow, or the person typed slowly)
      [59_999, true],
      [60_000, false], // two steps late
      [90_000, false],
    ];
    for (const [offset, accepted] of cases) {
      const { clock, totp } = clocked(STEP_START + offset);
      assert.equal(clock.t, STEP_START + offset);
      const result = await totp.verify(newAccount(), secret, code);
      assert.equal(result.ok, accepted, `code of step S checked at S${offset >= 0 ? '+' : ''}${offset} ms: ${JSON.stringify(result)}`);
    }
  });

  test('a wrong code, a code of another secret and malformed input are refused as invalid', async () => {
    const { totp } = clocked();
    const secret = generateTotpSecret();
    const right = await totpCodeAt(secret, STEP_START);
    const wrong = String((Number(right) + 1) % 1_000_000).padStart(6, '0');
    assert.deepEqual(await totp.verify(newAccount(), secret, wrong), { ok: false, reason: 'invalid' });
    assert.deepEqual(await totp.verify(newAccount(), generateTotpSecret(), right).then((r) => r.ok), false);
    for (const input of ['', '12345', '1234567', 'abcdef', `${right}0`, '12 34 5']) {
      assert.deepEqual(await totp.verify(newAccount(), secret, input), { ok: false, reason: 'invalid' }, JSON.stringify(input));
    }
    assert.equal((await totp.verify(newAccount(), secret, `${right.slice(0, 3)} ${right.slice(3)}`)).ok, true, 'a space in the middle is forgiven');
  });

  test('replay: a code once accepted is refused, and so is any older step; a newer step is accepted', async () => {
    const { clock, totp } = clocked();
    const account = newAccount();
    const secret = generateTotpSecret();
    const previous = await totpCodeAt(secret, STEP_START - 30_000);
    const current = await totpCodeAt(secret, STEP_START);
    assert.deepEqual(await totp.verify(account, secret, current), { ok: true, step: STEP_START / 30_000 });
    assert.deepEqual(await totp.verify(account, secret, current), { ok: false, reason: 'replayed' }, 'the same code again');
    assert.deepEqual(await totp.verify(account, secret, previous), { ok: false, reason: 'replayed' }, 'an older step, still inside the window');
    clock.t += 30_000;
    assert.deepEqual(await totp.verify(account, secret, current), { ok: false, reason: 'replayed' }, 'still the same code, a step later');
    assert.equal((await totp.verify(account, secret, await totpCodeAt(secret, clock.t))).ok, true, 'the next step is a new code');
    clock.t += 30_000;
    assert.deepEqual(await totp.verify(newAccount(), secret, current), { ok: false, reason: 'invalid' }, 'two steps on, the code is out of the window for anyone');
  });

  test('replay protection is per account', async () => {
    const { totp } = clocked();
    const secret = generateTotpSecret();
    const code = await totpCodeAt(secret, STEP_START);
    assert.equal((await totp.verify(newAccount(), secret, code)).ok, true);
    assert.equal((await totp.verify(newAccount(), secret, code)).ok, true);
  });

  test('two parallel submissions of the same code: exactly one is accepted (embedded store)', async () => {
    const { totp } = clocked();
    const secret = generateTotpSecret();
    const code = await totpCodeAt(secret, STEP_START);
    const account = newAccount();
    const results = await Promise.all([totp.verify(account, secret, code), totp.verify(account, secret, code)]);
    assert.equal(results.filter((r) => r.ok).length, 1, JSON.stringify(results));
    assert.deepEqual(results.find((r) => !r.ok), { ok: false, reason: 'replayed' });
  });

  test('read ahead with the sign-in step (Redis): the same code and older steps refused, a newer one accepted, of parallel submissions one', async () => {
    const redis = await startRedis();
    const store = new RedisStore(connectRedis(redis.url, 1000));
    try {
      await store.ready(5000);
      const clock = { t: STEP_START };
      const totp = new TotpVerifier(store, { now: () => clock.t });
      const account = newAccount();
      const secret = generateTotpSecret();
      // As a second-factor post: the account's last step is read with the interaction, then the code checked.
      const post = (code: string) => withReadAhead(() => {
        store.readAhead([keys.totpLastStep(account)]);
        return totp.verify(account, secret, code);
      });
      const current = await totpCodeAt(secret, STEP_START);
      assert.equal((await post(current)).ok, true);
      assert.deepEqual(await post(current), { ok: false, reason: 'replayed' });
      assert.deepEqual(await post(await totpCodeAt(secret, STEP_START - 30_000)), { ok: false, reason: 'replayed' }, 'an older step');
      clock.t += 30_000;
      const next = await totpCodeAt(secret, clock.t);
      const results = await Promise.all([post(next), post(next), post(next)]);
      assert.equal(results.filter((r) => r.ok).length, 1, JSON.stringify(results));
      assert.equal(await store.get(keys.totpLastStep(account)), String(clock.t / 30_000));
    } finally {
      await store.close();
      await redis.dispose();
    }
  });

  test('normalizeTotpCode', () => {
    assert.equal(normalizeTotpCode(' 123 456 '), '123456');
    assert.equal(normalizeTotpCode('123-456'), '123456');
    assert.equal(normalizeTotpCode('１２３４５６'), undefined, 'full-width digits are not ASCII digits');
    assert.equal(normalizeTotpCode('12345a'), undefined);
  });
});

describe('TOTP provisioning', () => {
  test('otpauth:// URI with issuer and account name, SHA-1, 6 digits, 30 s', () => {
    const uri = new URL(totpUri({ issuer: 'id.example.com', accountName: 'ada@example.org', secret: 'JBSWY3DPEHPK3PXP' }));
    assert.equal(uri.protocol, 'otpauth:');
    assert.equal(uri.host, 'totp');
    assert.equal(decodeURIComponent(uri.pathname), '/id.example.com:ada@example.org');
    assert.equal(uri.searchParams.get('secret'), 'JBSWY3DPEHPK3PXP');
    assert.equal(uri.searchParams.get('issuer'), 'id.example.com');
    for (const [name, value] of [['algorithm', 'SHA1'], ['digits', '6'], ['period', '30']] as const) {
      const given = uri.searchParams.get(name);
      assert.ok(given === null || given === value, `${name}=${given}`);
    }
  });

  test('an issuer or account name with spaces and colons stays one label', () => {
    const uri = totpUri({ issuer: 'Acme: Staff SSO', accountName: 'ada+1@example.org', secret: 'JBSWY3DPEHPK3PXP' });
    const label = decodeURIComponent(new URL(uri).pathname.slice(1));
    assert.equal(label, 'Acme: Staff SSO:ada+1@example.org');
    assert.equal(new URL(uri).searchParams.get('issuer'), 'Acme: Staff SSO');
  });

  test('a QR code rendered on the server as SVG, and the key as text', async () => {
    const secret = generateTotpSecret();
    assert.match(secret, /^[A-Z2-7]{32}$/, '160 bits in base32');
    const shown = await totpProvisioning({ issuer: 'id.example.com', accountName: 'ada@example.org', secret });
    assert.match(shown.qrSvg, /^<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.match(shown.qrSvg, /<path/);
    assert.ok(!/<script|https?:\/\/(?!www\.w3\.org)/i.test(shown.qrSvg), 'no script, no external reference');
    assert.equal(shown.secret.replaceAll(' ', ''), secret);
    assert.match(shown.secret, /^([A-Z2-7]{4} ){7}[A-Z2-7]{4}$/);
    assert.equal(new URL(shown.uri).searchParams.get('secret'), secret);
  });
});
