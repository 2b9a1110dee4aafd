using System.Diagnostics.CodeAnalysis;
using System.Text;

namespace MsdFleet.Protocol.Naming;

/// <summary>
/// Rules for human-chosen names. Names are rejected with a reason, never silently rewritten: what an
/// operator typed is what the catalog and the fleet show.
/// </summary>
public static class NameRules
{
    public const int MaxImageNameBytes = 255;
    public const int MaxAgentIdLength = 64;

    /// <summary>Image names: 1–255 UTF-8 bytes, no path separators, no control characters, not . or ..</summary>
    public static bool TryValidateImageName([NotNullWhen(true)] string? name, [NotNullWhen(false)] out string? error)
    {
        error = null;
        if (string.IsNullOrEmpty(name))
        {
            error = "The image name is empty.";
            return false;
        }
        if (name is "." or "..")
        {
            error = "The image name may not be '.' or '..'.";
            return false;
        }
        int byteCount;
        try
        {
            byteCount = new UTF8Encoding(false, true).GetByteCount(name);
        }
        catch (EncoderFallbackException)
        {
            error = "The image name is not valid Unicode.";
            return false;
        }
        if (byteCount > MaxImageNameBytes)
        {
            error = $"The image name is {byteCount} bytes of UTF-8; the limit is {MaxImageNameBytes}.";
            return false;
        }
        foreach (var rune in name.EnumerateRunes())
        {
            if (rune.Value is '/' or '\\')
            {
                error = "The image name may not contain '/' or '\\'.";
                return false;
            }
            if (Rune.IsControl(rune) || Rune.GetUnicodeCategory(rune) is System.Globalization.UnicodeCategory.Format
                    or System.Globalization.UnicodeCategory.LineSeparator or System.Globalization.UnicodeCategory.ParagraphSeparator)
            {
                error = $"The image name contains the control or format character U+{rune.Value:X4}.";
                return false;
            }
        }
        if (char.IsWhiteSpace(name[0]) || char.IsWhiteSpace(name[^1]))
        {
            error = "The image name may not begin or end with whitespace.";
            return false;
        }
        return true;
    }

    /// <summary>Agent ids appear in MQTT topics and file names: 1–64 of [A-Za-z0-9._-], starting with a letter or digit.</summary>
    public static bool TryValidateAgentId([NotNullWhen(true)] string? id, [NotNullWhen(false)] out string? error)
    {
        error = null;
        if (string.IsNullOrEmpty(id))
        {
            error = "The agent id is empty.";
            return false;
        }
        if (id.Length > MaxAgentIdLength)
        {
            error = $"The agent id is {id.Length} characters; the limit is {MaxAgentIdLength}.";
            return false;
        }
        if (!char.IsAsciiLetterOrDigit(id[0]))
        {
            error = "The agent id must start with a letter or digit.";
            return false;
        }
        foreach (var c in id)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('.' or '_' or '-'))
            {
                error = $"The agent id may contain only letters, digits, '.', '_' and '-' (found '{c}').";
                return false;
            }
        }
        return true;
    }
}
