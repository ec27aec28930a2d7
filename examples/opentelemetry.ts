/**
 * tokengate's diagnostics channels as OpenTelemetry spans and metrics, with
 * `@opentelemetry/api` alone: whichever SDK the app registers (NodeSDK,
 * a console exporter) receives them. Without one, the API is a no-op.
 *
 *   npx tsx examples/opentelemetry.ts
 *
 * - one span `tokengate.verify` per upstream verification, with the
 *   provider, the outcome and the attempts as attributes;
 * - counters `tokengate.cache.lookups` (by result) and
 *   `tokengate.breaker.changes` (by state), a histogram
 *   `tokengate.verify.duration` (ms, by outcome).
 */
import { channel, tracingChannel } from 'node:diagnostics_channel';
import { type Meter, metrics, type Span, SpanStatusCode, type Tracer, trace } from '@opentelemetry/api';
import { type BreakerTrace, type CacheTrace, CHANNELS, createGate, type VerifyTrace } from '../src/index.js';
import { stubProvider } from '../src/testing/index.js';

/** Subscribes to tokengate's channels; returns what unsubscribes. */
export function instrumentTokengate(tracer: Tracer, meter: Meter): () => void {
  const lookups = meter.createCounter('tokengate.cache.lookups');
  const breakerChanges = meter.createCounter('tokengate.breaker.changes');
  const durations = meter.createHistogram('tokengate.verify.duration', { unit: 'ms' });
  const spans = new WeakMap<object, Span>();

  const onCache = (message: unknown) => {
    const { provider, result } = message as CacheTrace;
    lookups.add(1, { 'tokengate.provider': provider, 'tokengate.result': result });
  };
  const onBreaker = (message: unknown) => {
    const { provider, state } = message as BreakerTrace;
    breakerChanges.add(1, { 'tokengate.provider': provider, 'tokengate.state': state });
  };
  const end = (context: object) => {
    const verify = context as VerifyTrace;
    const span = spans.get(context);
    if (span === undefined) return;
    span.setAttributes({ 'tokengate.outcome': verify.outcome ?? 'failed', 'tokengate.attempts': verify.attempts ?? 0 });
    if (verify.outcome === 'failed') span.setStatus({ code: SpanStatusCode.ERROR });
    span.end();
    spans.delete(context);
    durations.record(verify.durationMs ?? 0, {
      'tokengate.provider': verify.provider,
      'tokengate.outcome': verify.outcome ?? 'failed',
    });
  };
  const verifyHandlers = {
    start: (context: VerifyTrace) => {
      spans.set(
        context,
        tracer.startSpan('tokengate.verify', { attributes: { 'tokengate.provider': context.provider } }),
      );
    },
    end: () => {},
    asyncStart: () => {},
    asyncEnd: end,
    error: end,
  };

  channel(CHANNELS.cache).subscribe(onCache);
  channel(CHANNELS.breaker).subscribe(onBreaker);
  const verify = tracingChannel<VerifyTrace>(CHANNELS.verify);
  verify.subscribe(verifyHandlers);
  return () => {
    channel(CHANNELS.cache).unsubscribe(onCache);
    channel(CHANNELS.breaker).unsubscribe(onBreaker);
    verify.unsubscribe(verifyHandlers);
  };
}

async function main(): Promise<void> {
  const stop = instrumentTokengate(trace.getTracer('tokengate-example'), metrics.getMeter('tokengate-example'));
  const gate = createGate({ providers: [stubProvider({ tokens: { 'sample-token-1': { subject: 'ada' } } })] });
  const request = { headers: { authorization: 'Bearer sample-token-1' } };
  const first = await gate.authenticate(request);
  await gate.authenticate(request);
  // What the channels carried, as the gate counts it: with an SDK registered, as many spans and lookups are exported.
  const { upstreamCalls, misses, hits } = gate.stats();
  console.log(
    `authenticated ${first.subject} twice: ${upstreamCalls} verification (a tokengate.verify span), ${misses} miss and ${hits} hit (tokengate.cache.lookups)`,
  );
  // The gate closes first: that ends every verification under way, and so its span, while the channels are listened to.
  await gate.close();
  stop();
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
