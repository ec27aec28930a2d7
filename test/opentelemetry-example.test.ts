/**
 * examples/opentelemetry.ts: tokengate's channels become spans and metrics
 * through @opentelemetry/api. The tracer and meter here record what they
 * are given, as an SDK's exporter would.
 */
import { spawnSync } from 'node:child_process';
import type { Attributes, Meter, Span, SpanOptions, Tracer } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { instrumentTokengate } from '../examples/opentelemetry.js';
import { createGate } from '../src/index.js';
import { stubProvider } from '../src/testing/index.js';

interface Recorded {
  spans: Array<{ name: string; attributes: Attributes; ended: boolean; status: number | undefined }>;
  metrics: Array<{ name: string; value: number; attributes: Attributes | undefined }>;
}

function recorder(): { tracer: Tracer; meter: Meter; recorded: Recorded } {
  const recorded: Recorded = { spans: [], metrics: [] };
  const tracer = {
    startSpan(name: string, options?: SpanOptions): Span {
      const span = {
        name,
        attributes: { ...options?.attributes },
        ended: false,
        status: undefined as number | undefined,
      };
      recorded.spans.push(span);
      const api = {
        setAttributes: (attributes: Attributes) => Object.assign(span.attributes, attributes) && api,
        setStatus: (status: { code: number }) => {
          span.status = status.code;
          return api;
        },
        end: () => {
          span.ended = true;
        },
      };
      return api as unknown as Span;
    },
  } as unknown as Tracer;
  const instrument = (name: string) => ({
    add: (value: number, attributes?: Attributes) => recorded.metrics.push({ name, value, attributes }),
    record: (value: number, attributes?: Attributes) => recorded.metrics.push({ name, value, attributes }),
  });
  const meter = { createCounter: instrument, createHistogram: instrument } as unknown as Meter;
  return { tracer, meter, recorded };
}

describe('examples/opentelemetry.ts', () => {
  it('turns verifications into spans and cache lookups into counters, without a token', async () => {
    const { tracer, meter, recorded } = recorder();
    const stop = instrumentTokengate(tracer, meter);
    const gate = createGate({ providers: [stubProvider({ tokens: { SECRETotelToken: { subject: 'ada' } } })] });
    try {
      const request = { headers: { authorization: 'Bearer SECRETotelToken' } };
      await gate.authenticate(request);
      await gate.authenticate(request);
      await expect(gate.authenticate({ headers: { authorization: 'Bearer SECRETotherToken' } })).rejects.toBeDefined();
    } finally {
      stop();
      await gate.close();
    }
    expect(recorded.spans).toMatchObject([
      {
        name: 'tokengate.verify',
        ended: true,
        attributes: { 'tokengate.provider': 'stub', 'tokengate.outcome': 'accepted' },
      },
      {
        name: 'tokengate.verify',
        ended: true,
        attributes: { 'tokengate.outcome': 'rejected', 'tokengate.attempts': 1 },
      },
    ]);
    const lookups = recorded.metrics
      .filter((m) => m.name === 'tokengate.cache.lookups')
      .map((m) => m.attributes?.['tokengate.result']);
    expect(lookups).toEqual(['miss', 'hit', 'miss']);
    expect(recorded.metrics.filter((m) => m.name === 'tokengate.verify.duration')).toHaveLength(2);
    expect(JSON.stringify(recorded)).not.toContain('SECRET');
  });

  it('runs to the end on its own', () => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'examples/opentelemetry.ts'], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('authenticated ada twice: 1 verification (a tokengate.verify span), 1 miss and 1 hit');
    expect(run.stderr).toBe('');
  });
});
