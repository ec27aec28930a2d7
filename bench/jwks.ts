/** The JWKS server of the peers scenario's `express-oauth2-jwt-bearer` variant, on 127.0.0.1. */
import { createSign, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HOST } from './lib.js';

export interface Jwks {
  readonly jwksUri: string;
  readonly issuer: string;
  readonly audience: string;
  /** An RS256 JWT with `claims`, valid for an hour, that the variant accepts. */
  sign(claims: Record<string, unknown>): string;
  close(): Promise<void>;
}

/** An RS256 key pair made at start-up, its public half served as a JWKS. */
export async function startJwksServer(): Promise<Jwks> {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = 'bench-key-1';
  const body = JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' }] });
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const { port } = server.address() as AddressInfo;
  const issuer = `http://${HOST}:${port}/`;
  const audience = 'https://api.bench.example';
  const now = () => Math.floor(Date.now() / 1000);
  return {
    jwksUri: `${issuer}.well-known/jwks.json`,
    issuer,
    audience,
    sign: (claims) =>
      signRs256({ iss: issuer, aud: audience, iat: now(), exp: now() + 3600, ...claims }, privateKey, kid),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function signRs256(claims: Record<string, unknown>, key: KeyObject, kid: string): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${encode({ alg: 'RS256', typ: 'JWT', kid })}.${encode(claims)}`;
  const signature = createSign('RSA-SHA256').update(input).sign(key).toString('base64url');
  return `${input}.${signature}`;
}
