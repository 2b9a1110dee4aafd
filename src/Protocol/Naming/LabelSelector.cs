using System.Diagnostics.CodeAnalysis;
using System.Text;

namespace MsdFleet.Protocol.Naming;

/// <summary>
/// Label selectors in the syntax Kubernetes users know (<c>kubectl get -l</c>):
/// <c>site=ams1,rack in (r1,r2),!maintenance</c>. Requirements are joined by commas and all must hold:
/// <list type="bullet">
/// <item><c>key=value</c>, <c>key==value</c>: the label is present with that value;</item>
/// <item><c>key!=value</c>: the label is absent or has another value;</item>
/// <item><c>key in (a,b)</c>: present with one of the values; <c>key notin (a,b)</c>: absent or none of them;</item>
/// <item><c>key</c>: present (any value); <c>!key</c>: absent.</item>
/// </list>
/// An empty selector matches everything. Keys and values follow <see cref="Labels"/>' rules; a malformed
/// selector is refused with the position and what was expected, never guessed at.
/// </summary>
public sealed class LabelSelector
{
    public enum Operator
    {
        Equals,
        NotEquals,
        In,
        NotIn,
        Exists,
        DoesNotExist,
    }

    public sealed record Requirement(string Key, Operator Operator, IReadOnlyList<string> Values)
    {
        public bool Matches(IReadOnlyDictionary<string, string> labels)
        {
            ArgumentNullException.ThrowIfNull(labels);
            var has = labels.TryGetValue(Key, out var value);
            return Operator switch
            {
                Operator.Equals or Operator.In => has && Values.Contains(value!, StringComparer.Ordinal),
                Operator.NotEquals or Operator.NotIn => !has || !Values.Contains(value!, StringComparer.Ordinal),
                Operator.Exists => has,
                _ => !has,
            };
        }

        public override string ToString() => Operator switch
        {
            Operator.Equals => $"{Key}={Values[0]}",
            Operator.NotEquals => $"{Key}!={Values[0]}",
            Operator.In => $"{Key} in ({string.Join(',', Values)})",
            Operator.NotIn => $"{Key} notin ({string.Join(',', Values)})",
            Operator.Exists => Key,
            _ => "!" + Key,
        };
    }

    public const int MaxLength = 4096;

    private LabelSelector(IReadOnlyList<Requirement> requirements) => Requirements = requirements;

    public static LabelSelector Everything { get; } = new([]);

    public IReadOnlyList<Requirement> Requirements { get; }

    public bool IsEmpty => Requirements.Count == 0;

    public bool Matches(IReadOnlyDictionary<string, string> labels) => Requirements.All(r => r.Matches(labels));

    /// <summary>The selector in canonical form (what was parsed, normalized spacing).</summary>
    public override string ToString() => string.Join(',', Requirements);

    public static LabelSelector Parse(string? text) =>
        TryParse(text, out var selector, out var error) ? selector : throw new FormatException(error);

    public static bool TryParse(string? text, [NotNullWhen(true)] out LabelSelector? selector, [NotNullWhen(false)] out string? error)
    {
        selector = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            selector = Everything;
            error = null;
            return true;
        }
        if (text.Length > MaxLength)
        {
            error = $"The selector is {text.Length} characters long; at most {MaxLength} are allowed.";
            return false;
        }
        var parser = new Parser(text);
        var requirements = new List<Requirement>();
        while (true)
        {
            if (!parser.TryRequirement(out var requirement, out error))
                return false;
            requirements.Add(requirement);
            parser.SkipSpaces();
            if (parser.AtEnd)
                break;
            if (!parser.Take(','))
            {
                error = parser.Error("',' between requirements");
                return false;
            }
        }
        selector = new LabelSelector(requirements);
        error = null;
        return true;
    }

    private sealed class Parser(string text)
    {
        private int _at;

        public bool AtEnd => _at >= text.Length;

        public void SkipSpaces()
        {
            while (_at < text.Length && text[_at] == ' ')
                _at++;
        }

        public bool Take(char c)
        {
            SkipSpaces();
            if (_at < text.Length && text[_at] == c)
            {
                _at++;
                return true;
            }
            return false;
        }

        private bool TakeWord(string word)
        {
            SkipSpaces();
            if (string.CompareOrdinal(text, _at, word, 0, word.Length) != 0)
                return false;
            var end = _at + word.Length;
            if (end < text.Length && text[end] is not (' ' or '('))
                return false;
            _at = end;
            return true;
        }

        public string Error(string expected)
        {
            var found = AtEnd ? "the end" : $"'{text[_at]}'";
            return $"Invalid selector at position {_at + 1}: expected {expected}, found {found} (in \"{text}\").";
        }

        private string Token()
        {
            SkipSpaces();
            var start = _at;
            while (_at < text.Length && text[_at] is not (' ' or ',' or '=' or '!' or '(' or ')'))
                _at++;
            return text[start.._at];
        }

        public bool TryRequirement([NotNullWhen(true)] out Requirement? requirement, [NotNullWhen(false)] out string? error)
        {
            requirement = null;
            if (Take('!'))
            {
                var absent = Token();
                if (!CheckKey(absent, out error))
                    return false;
                requirement = new Requirement(absent, Operator.DoesNotExist, []);
                return true;
            }
            var key = Token();
            if (key.Length == 0)
            {
                error = Error("a label key");
                return false;
            }
            if (!CheckKey(key, out error))
                return false;
            SkipSpaces();
            if (AtEnd || text[_at] == ',')
            {
                requirement = new Requirement(key, Operator.Exists, []);
                return true;
            }
            if (Take('!'))
            {
                if (!Take('='))
                {
                    error = Error("'=' after '!'");
                    return false;
                }
                return Single(key, Operator.NotEquals, out requirement, out error);
            }
            if (Take('='))
            {
                Take('=');
                return Single(key, Operator.Equals, out requirement, out error);
            }
            var op = TakeWord("notin") ? Operator.NotIn : TakeWord("in") ? Operator.In : (Operator?)null;
            if (op is null)
            {
                error = Error("'=', '==', '!=', 'in' or 'notin'");
                return false;
            }
            if (!Take('('))
            {
                error = Error("'(' to open the value list");
                return false;
            }
            var values = new List<string>();
            while (true)
            {
                var value = Token();
                if (!CheckValue(value, out error))
                    return false;
                values.Add(value);
                if (Take(')'))
                    break;
                if (!Take(','))
                {
                    error = Error("',' or ')' in the value list");
                    return false;
                }
            }
            requirement = new Requirement(key, op.Value, values.Distinct(StringComparer.Ordinal).ToList());
            return true;
        }

        private bool Single(string key, Operator op, [NotNullWhen(true)] out Requirement? requirement, [NotNullWhen(false)] out string? error)
        {
            requirement = null;
            var value = Token();
            if (!CheckValue(value, out error))
                return false;
            SkipSpaces();
            if (!AtEnd && text[_at] != ',')
            {
                error = Error("',' or the end after the value");
                return false;
            }
            requirement = new Requirement(key, op, [value]);
            return true;
        }

        private bool CheckKey(string key, [NotNullWhen(false)] out string? error)
        {
            if (Labels.TryValidateKey(key, out error))
                return true;
            error = $"Invalid selector near position {_at - key.Length + 1}: {error}";
            return false;
        }

        private bool CheckValue(string value, [NotNullWhen(false)] out string? error)
        {
            if (Labels.TryValidateValue(value, out error))
                return true;
            error = $"Invalid selector near position {_at - value.Length + 1}: {error}";
            return false;
        }
    }
}

/// <summary>
/// Label keys and values, by Kubernetes' rules so selectors copy over: a key is an optional DNS-subdomain
/// prefix and '/' and a name of 1–63 characters (letters, digits, '-', '_', '.', starting and ending with a
/// letter or digit); a value is empty or such a name. <see cref="Site"/> is the first-class label that groups
/// agents for bandwidth budgets and the fleet view.
/// </summary>
public static class Labels
{
    public const string Site = "site";
    public const int MaxNameLength = 63;
    public const int MaxPrefixLength = 253;
    public const int MaxLabelsPerAgent = 64;

    public static bool TryValidateKey([NotNullWhen(true)] string? key, [NotNullWhen(false)] out string? error)
    {
        error = null;
        if (string.IsNullOrEmpty(key))
        {
            error = "A label key is empty.";
            return false;
        }
        var slash = key.IndexOf('/', StringComparison.Ordinal);
        var name = slash < 0 ? key : key[(slash + 1)..];
        if (slash >= 0)
        {
            var prefix = key[..slash];
            if (prefix.Length == 0 || prefix.Length > MaxPrefixLength || !prefix.Split('.').All(IsDnsLabel))
            {
                error = $"The label key '{key}' has an invalid prefix: it must be a DNS subdomain (lowercase letters, digits, '-' and '.').";
                return false;
            }
        }
        if (!IsName(name))
        {
            error = $"The label key '{key}' is invalid: the name must be 1-{MaxNameLength} letters, digits, '-', '_' or '.', starting and ending with a letter or digit.";
            return false;
        }
        return true;
    }

    public static bool TryValidateValue(string? value, [NotNullWhen(false)] out string? error)
    {
        error = null;
        if (string.IsNullOrEmpty(value) || IsName(value))
            return true;
        error = $"The label value '{value}' is invalid: it must be empty or 1-{MaxNameLength} letters, digits, '-', '_' or '.', starting and ending with a letter or digit.";
        return false;
    }

    /// <summary>Checks a whole set (count, every key and value); the first problem is the error.</summary>
    public static bool TryValidate(IReadOnlyDictionary<string, string>? labels, [NotNullWhen(false)] out string? error)
    {
        error = null;
        if (labels is null)
            return true;
        if (labels.Count > MaxLabelsPerAgent)
        {
            error = $"{labels.Count} labels; an agent may have at most {MaxLabelsPerAgent}.";
            return false;
        }
        foreach (var (key, value) in labels)
        {
            if (!TryValidateKey(key, out error) || !TryValidateValue(value, out error))
                return false;
        }
        return true;
    }

    /// <summary>An agent's labels as selectors see them: what it reports, overridden by what was set centrally; by key.</summary>
    public static IReadOnlyDictionary<string, string> Merge(IReadOnlyDictionary<string, string>? reported, IReadOnlyDictionary<string, string>? central)
    {
        var merged = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in reported ?? new Dictionary<string, string>())
            merged[key] = value;
        foreach (var (key, value) in central ?? new Dictionary<string, string>())
            merged[key] = value;
        return merged;
    }

    private static bool IsName(string s)
    {
        if (s.Length is 0 or > MaxNameLength || !char.IsAsciiLetterOrDigit(s[0]) || !char.IsAsciiLetterOrDigit(s[^1]))
            return false;
        foreach (var c in s)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
                return false;
        }
        return true;
    }

    private static bool IsDnsLabel(string s)
    {
        static bool LowerOrDigit(char c) => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c);
        return s.Length is > 0 and <= 63 && LowerOrDigit(s[0]) && LowerOrDigit(s[^1]) && s.All(c => LowerOrDigit(c) || c == '-');
    }
}
