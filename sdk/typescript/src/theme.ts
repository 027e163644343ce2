/**
 * The `colors` option from an xterm.js theme object (ITheme), so a session answers colour queries (OSC 10/11/12/4)
 * with the colours the user sees: vim and neovim pick light or dark from the background.
 */
import type { Colors } from "./types.js";

/** The ITheme fields used (xterm.js colours are CSS strings). */
export interface XtermTheme {
  foreground?: string;
  background?: string;
  cursor?: string;
  black?: string;
  red?: string;
  green?: string;
  yellow?: string;
  blue?: string;
  magenta?: string;
  cyan?: string;
  white?: string;
  brightBlack?: string;
  brightRed?: string;
  brightGreen?: string;
  brightYellow?: string;
  brightBlue?: string;
  brightMagenta?: string;
  brightCyan?: string;
  brightWhite?: string;
  /** Palette entries 16..255. */
  extendedAnsi?: string[];
}

const ANSI = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white", "brightBlack", "brightRed",
  "brightGreen", "brightYellow", "brightBlue", "brightMagenta", "brightCyan", "brightWhite"] as const;

/** "#rrggbb" for a CSS hex or rgb()/rgba() colour; undefined for anything else (named colours, ...). */
function hex(css: string | undefined): string | undefined {
  if (css === undefined) return undefined;
  const s = css.trim();
  let m = /^#([0-9a-f]{3}|[0-9a-f]{6})([0-9a-f]{2})?$/i.exec(s);
  if (m) return `#${m[1]}`;
  m = /^#([0-9a-f]{3})[0-9a-f]$/i.exec(s);
  if (m) return `#${m[1]}`;
  m = /^rgba?\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*(?:,\s*[\d.]+\s*)?\)$/i.exec(s);
  if (m) {
    const parts = [m[1], m[2], m[3]].map((v) => Math.min(255, Number(v)).toString(16).padStart(2, "0"));
    return `#${parts.join("")}`;
  }
  return undefined;
}

export function colorsFromTheme(theme: XtermTheme): Colors {
  const out: Colors = {};
  const fg = hex(theme.foreground);
  const bg = hex(theme.background);
  const cursor = hex(theme.cursor);
  if (fg) out.foreground = fg;
  if (bg) out.background = bg;
  if (cursor) out.cursor = cursor;
  const palette: Record<number, string> = {};
  ANSI.forEach((name, i) => {
    const c = hex(theme[name]);
    if (c) palette[i] = c;
  });
  (theme.extendedAnsi ?? []).slice(0, 240).forEach((css, i) => {
    const c = hex(css);
    if (c) palette[16 + i] = c;
  });
  if (Object.keys(palette).length) out.palette = palette;
  return out;
}
