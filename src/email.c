/* email.c: the email address check behind core.valid_email (zendesk.users.valid_email).
 * One pass over the bytes. It refuses what can never be delivered, as far as Zendesk goes
 * (RFC 5321 4.1.2 and 4.5.3.1, RFC 5322 3.2.3, RFC 6531 for UTF-8; the rules are written out
 * and checked as a grammar in tests/support/email_cases.lua):
 *   - at most 254 bytes, exactly one '@';
 *   - local part: 1 to 64 bytes of atoms joined by single dots; an atom's bytes are RFC 5322
 *     atext (A-Z a-z 0-9 !#$%&'*+-/=?^_`{|}~) or UTF-8 bytes (>= 0x80): no space, control
 *     byte (NUL included), DEL or special ("(),:;<>@[\]), since quoting is not taken;
 *   - domain: at least two labels separated by '.', each 1 to 63 bytes of A-Z a-z 0-9 '-' or
 *     bytes >= 0x80, neither starting nor ending with '-'.
 * Deliberately simple: Zendesk has the last word, this only catches what can never work.
 * Letters are ASCII, as with Lua's patterns in the C locale and with LuaJIT. */
#include "zd.h"

/* atext (RFC 5322 3.2.3), UTF-8 bytes, and the '.' between atoms */
static int local_byte_ok(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80)
        return 1;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '/': case '=': case '?': case '^': case '_': case '`': case '{': case '|': case '}':
    case '~': case '.':
        return 1;
    default:
        return 0;
    }
}

static int label_byte_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c >= 0x80;
}

int zd_valid_email(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i, at, label;
    int dots = 0;

    if (n > 254)
        return 0;
    for (i = 0; i < n && p[i] != '@'; i++) {
        if (!local_byte_ok(p[i]))
            return 0;
        if (p[i] == '.' && (i == 0 || p[i - 1] == '.'))
            return 0;
    }
    at = i;
    if (at == 0 || at > 64 || at == n || p[at - 1] == '.')
        return 0;
    label = at + 1;                 /* where the current label starts */
    for (i = at + 1; i < n; i++) {
        if (i - label >= 63 && p[i] != '.')
            return 0;               /* a label of more than 63 bytes */
        if (p[i] == '.') {
            if (i == label || p[i - 1] == '-')
                return 0;           /* empty label, or one ending with '-' */
            label = i + 1;
            dots++;
        } else if (!label_byte_ok(p[i]) || (p[i] == '-' && i == label)) {
            return 0;               /* a second '@' lands here too */
        }
    }
    return dots > 0 && label < n && p[n - 1] != '-';
}
