/** Prometheus text format as a map from `name{labels}` to value (etcd-sync's identity label left out). */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a metric line: ${line}`);
    const labels = (m[2] ?? '').replace(/,?identity="[^"]*"/, '').replace(/^\{,/, '{').replace('{}', '');
    out.set(`${m[1]}${labels}`, Number(m[3]));
  }
  return out;
}
