import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { isoCBOR } from '@simplewebauthn/server/helpers';
import type { AuthenticationResponseJSON, PublicKeyCredentialCreationOptionsJSON, PublicKeyCredentialRequestOptionsJSON, RegistrationResponseJSON } from '@simplewebauthn/server';

/**
 * A WebAuthn authenticator in software (ES256, attestation "none"), for the tests and the bench that
 * drive passkeys without a browser. It builds real authenticator data, client data and signatures, so
 * @simplewebauthn/server verifies them as it would a device's; the browser tests use Chromium's virtual
 * authenticator instead.
 */
export interface SoftKey {
  id: string;
  privateKey: KeyObject;
  userHandle: string;
  counter: number;
}

const FLAG_UP = 0x01;
const FLAG_UV = 0x04;
const FLAG_AT = 0x40;

export class SoftAuthenticator {
  readonly keys = new Map<string, SoftKey>();
  readonly origin: string;
  /** Whether the person is verified (PIN, biometrics): the UV flag. */
  userVerification: boolean;
  /** Whether the signature counter moves (0 forever when not). */
  counts: boolean;

  constructor(options: { origin: string; userVerification?: boolean; counts?: boolean }) {
    this.origin = options.origin;
    this.userVerification = options.userVerification ?? true;
    this.counts = options.counts ?? true;
  }

  #flags(extra = 0) {
    return FLAG_UP | (this.userVerification ? FLAG_UV : 0) | extra;
  }

  #clientData(type: string, challenge: string, origin: string) {
    return Buffer.from(JSON.stringify({ type, challenge, origin, crossOrigin: false }));
  }

  create(options: PublicKeyCredentialCreationOptionsJSON, origin = this.origin): RegistrationResponseJSON {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = publicKey.export({ format: 'jwk' });
    const cose = isoCBOR.encode(new Map<number, number | Uint8Array>([[1, 2], [3, -7], [-1, 1], [-2, Buffer.from(jwk.x!, 'base64url')], [-3, Buffer.from(jwk.y!, 'base64url')]]));
    const credentialId = randomBytes(16);
    const id = credentialId.toString('base64url');
    const counter = this.counts ? 1 : 0;
    const authData = Buffer.concat([
      createHash('sha256').update(options.rp.id!).digest(),
      Buffer.from([this.#flags(FLAG_AT)]),
      u32(counter),
      Buffer.alloc(16),
      Buffer.from([credentialId.length >> 8, credentialId.length & 0xff]),
      credentialId,
      Buffer.from(cose),
    ]);
    const attestationObject = isoCBOR.encode(new Map<string, unknown>([['fmt', 'none'], ['attStmt', new Map()], ['authData', authData]]) as never);
    this.keys.set(id, { id, privateKey, userHandle: options.user.id, counter });
    return {
      id,
      rawId: id,
      type: 'public-key',
      response: {
        clientDataJSON: this.#clientData('webauthn.create', options.challenge, origin).toString('base64url'),
        attestationObject: Buffer.from(attestationObject).toString('base64url'),
        transports: ['internal'],
      },
      clientExtensionResults: {},
      authenticatorAttachment: 'platform',
    };
  }

  /** An assertion for `options`, with the given key (default: the first one allowed, else any). */
  get(options: PublicKeyCredentialRequestOptionsJSON, init: { origin?: string; keyId?: string; counter?: number } = {}): AuthenticationResponseJSON {
    const allowed = options.allowCredentials?.map((c) => c.id) ?? [];
    const key = this.keys.get(init.keyId ?? allowed.find((id) => this.keys.has(id)) ?? [...this.keys.keys()][0]!);
    if (!key) throw new Error('no passkey for these options');
    if (this.counts) key.counter += 1;
    const counter = init.counter ?? key.counter;
    const authData = Buffer.concat([createHash('sha256').update(options.rpId!).digest(), Buffer.from([this.#flags()]), u32(counter)]);
    const clientData = this.#clientData('webauthn.get', options.challenge, init.origin ?? this.origin);
    const signature = sign('sha256', Buffer.concat([authData, createHash('sha256').update(clientData).digest()]), key.privateKey);
    return {
      id: key.id,
      rawId: key.id,
      type: 'public-key',
      response: {
        clientDataJSON: clientData.toString('base64url'),
        authenticatorData: authData.toString('base64url'),
        signature: signature.toString('base64url'),
        userHandle: key.userHandle,
      },
      clientExtensionResults: {},
      authenticatorAttachment: 'platform',
    };
  }
}

function u32(n: number) {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
