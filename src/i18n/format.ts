/**
 * A small ICU-like message format: `{name}` is a parameter, `{count, plural, one {# code} other {# codes}}`
 * picks a form by the locale's plural rules (`#` is the count, formatted for the locale). Enough for our
 * catalogues, with no dependency; `placeholdersOf` lets a test compare two catalogues' messages.
 */
export type MessageParams = Record<string, string | number>;

/** The index of the `}` that closes the `{` at `open`. */
function closing(text: string, open: number): number {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return i;
  }
  throw new Error(`unbalanced braces in message: ${text}`);
}

/** The forms of a plural argument: `one {…} other {…}` → { one: '…', other: '…' }. */
function pluralForms(body: string): Record<string, string> {
  const forms: Record<string, string> = {};
  const re = /\s*(=\d+|zero|one|two|few|many|other)\s*\{/g;
  let match: RegExpExecArray | null;
  while ((match = re.exec(body))) {
    const open = match.index + match[0].length - 1;
    const end = closing(body, open);
    forms[match[1] ?? 'other'] = body.slice(open + 1, end);
    re.lastIndex = end + 1;
  }
  return forms;
}

// Made once per locale: a page formats dozens of messages, and each Intl object is costly to build.
const numberFormats = new Map<string, Intl.NumberFormat>();
const pluralRules = new Map<string, Intl.PluralRules>();
const numberFormat = (locale: string) => numberFormats.get(locale) ?? numberFormats.set(locale, new Intl.NumberFormat(locale)).get(locale)!;
const pluralRule = (locale: string) => pluralRules.get(locale) ?? pluralRules.set(locale, new Intl.PluralRules(locale)).get(locale)!;

export function formatMessage(locale: string, template: string, params: MessageParams = {}): string {
  // Most messages have no argument: as they are, without a walk through every character.
  if (!template.includes('{')) return template;
  let out = '';
  for (let i = 0; i < template.length; i++) {
    if (template[i] !== '{') {
      out += template[i];
      continue;
    }
    const end = closing(template, i);
    const inner = template.slice(i + 1, end);
    const comma = inner.indexOf(',');
    if (comma < 0) {
      const value = params[inner.trim()];
      out += value === undefined ? '' : typeof value === 'number' ? numberFormat(locale).format(value) : value;
    } else {
      const name = inner.slice(0, comma).trim();
      const rest = inner.slice(comma + 1);
      const kind = rest.slice(0, rest.indexOf(',')).trim();
      if (kind !== 'plural') throw new Error(`unknown argument kind ${kind} in message: ${template}`);
      const count = Number(params[name] ?? 0);
      const forms = pluralForms(rest.slice(rest.indexOf(',') + 1));
      const form = forms[`=${count}`] ?? forms[pluralRule(locale).select(count)] ?? forms.other ?? '';
      out += formatMessage(locale, form.replaceAll('#', '{#}'), { ...params, '#': count });
    }
    i = end;
  }
  return out;
}

/** The parameter names a message uses (plural forms' own `#` aside), sorted: equal for a key in every catalogue. */
export function placeholdersOf(template: string): string[] {
  const names = new Set<string>();
  for (const match of template.matchAll(/\{\s*([A-Za-z_][\w]*)\s*(?:,|\})/g)) if (match[1]) names.add(match[1]);
  return [...names].sort();
}
