// Text for numbers the APIs return. Money arrives as exact decimal strings and is shown exactly:
// grouped, at least two decimals, never through a binary float.

const intFmt = new Intl.NumberFormat("en-US");

function groupDigits(digits) {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** "1234.5" -> "$1,234.50"; "0.000015" -> "$0.000015" (exact). */
export function money(text) {
  if (text === null || text === undefined) return "—";
  const s = String(text);
  const negative = s.startsWith("-");
  const [whole, frac = ""] = (negative ? s.slice(1) : s).split(".");
  const decimals = frac.replace(/0+$/, "").padEnd(2, "0");
  return `${negative ? "−" : ""}$${groupDigits(whole || "0")}.${decimals}`;
}

/** Money split into the cents part and the exact tail (the tail is shown smaller). */
export function moneyParts(text) {
  const full = money(text);
  const dot = full.indexOf(".");
  return { head: full.slice(0, dot + 3), tail: full.slice(dot + 3) };
}

/** A float for a chart only (never for a figure shown as text). */
export const moneyNumber = (text) => (text === null || text === undefined ? 0 : Number(text));

export const count = (n) => (n === null || n === undefined ? "—" : intFmt.format(n));

const tickFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 12 });

/** A chart axis tick: as many decimals as the step needs (0.0045 stays 0.0045, not 0.005; a
 * picodollar step is not $0), with a float's noise past the picodollar dropped. */
export const tick = (n) => tickFmt.format(n);

export function ms(v) {
  if (v === null || v === undefined) return "—";
  if (v >= 10_000) return `${(v / 1000).toFixed(1)} s`;
  if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
  if (v >= 100) return `${Math.round(v)} ms`;
  return `${Number(v.toFixed(1))} ms`;
}

export const percent = (rate) => (rate === null || rate === undefined ? "—" : `${(rate * 100).toFixed(2)} %`);

export function score(fb) {
  if (!fb || !fb.count) return "—";
  return `${fb.mean_score.toFixed(2)} (${count(fb.count)})`;
}

const formats = new Map();
function formatter(kind, tz) {
  const id = `${kind} ${tz}`;
  if (!formats.has(id)) {
    const opts = kind === "day" ? { year: "numeric", month: "short", day: "2-digit" }
      : { year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
    try {
      formats.set(id, new Intl.DateTimeFormat("en-GB", { ...opts, timeZone: tz }));
    } catch {
      formats.set(id, new Intl.DateTimeFormat("en-GB", { ...opts, timeZone: "UTC" }));
    }
  }
  return formats.get(id);
}

/** Epoch ms -> "01 Dec 2026" (UTC, or the zone given). */
export const day = (epochMs, tz = "UTC") => formatter("day", tz).format(new Date(epochMs));

/** Epoch ms -> "01 Dec 2026, 13:05:02 UTC" (or in the zone given, named after the time). */
export const when = (epochMs, tz = "UTC") => (epochMs ? `${clock(epochMs, tz)} ${tz}` : "—");

/** Epoch ms -> "01 Dec 2026, 13:05:02" in `tz`, without the zone's name. */
export const clock = (epochMs, tz = "UTC") => (epochMs ? formatter("time", tz).format(new Date(epochMs)) : "—");

/** A time bucket as the API renders it ("2026-11-03", "2026-11-03T14:00:00Z", "2026-11") -> axis text. */
export function bucketLabel(value, unit) {
  if (value === null || value === undefined) return "—";
  if (unit === "hour") { // a local hour carries its offset: the repeated autumn hour shows twice, told apart
    const offset = value.endsWith("Z") ? "" : value.slice(19).replace(":00", "");
    return `${value.slice(5, 10)} ${value.slice(11, 16)}${offset}`;
  }
  if (unit === "day") return value.slice(5);
  return value;
}

export const plural = (n, one, many = `${one}s`) => `${count(n)} ${n === 1 ? one : many}`;

const PICO = 10n ** 12n;

/** An exact dollar string ("12.5", "-0.000001") as integer picodollars (a BigInt). */
export function toPico(text) {
  const s = String(text ?? "0");
  const negative = s.startsWith("-");
  const [whole, frac = ""] = (negative ? s.slice(1) : s).split(".");
  const pico = BigInt(whole || "0") * PICO + BigInt((frac + "000000000000").slice(0, 12));
  return negative ? -pico : pico;
}

/** Integer picodollars (a BigInt) as an exact dollar string: 12500000000000n -> "12.5". */
export function picoText(pico) {
  const negative = pico < 0n;
  const abs = negative ? -pico : pico;
  const frac = (abs % PICO).toString().padStart(12, "0").replace(/0+$/, "");
  return `${negative ? "-" : ""}${abs / PICO}${frac ? `.${frac}` : ""}`;
}

/** a / n in picodollars, rounded half up (a mean of `n` days' spend). */
export const picoMean = (a, n) => (a * 2n + BigInt(n)) / (2n * BigInt(n));
