using System.ComponentModel.DataAnnotations;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Gadget;

/// <summary>Bound from <c>Gadget</c>: which driver presents the drives, and which configfs gadget it drives or builds.</summary>
public sealed class GadgetOptions : IValidatableObject
{
    public const string Section = "Gadget";

    /// <summary><c>configfs</c> writes the gadget's attributes itself; <c>kvmd</c> drives a stock PiKVM through kvmd's HTTP API.</summary>
    [RegularExpression("^(configfs|kvmd)$", ErrorMessage = "Gadget:Driver must be configfs or kvmd.")]
    public string Driver { get; set; } = "configfs";

    /// <summary>Where configfs is mounted; tests point this at a directory tree laid out the same way.</summary>
    [Required]
    public string ConfigfsRoot { get; set; } = "/sys/kernel/config";

    /// <summary>Gadget folder under usb_gadget/ (PiKVM's is <c>kvmd</c>).</summary>
    [Required]
    public string GadgetName { get; set; } = "kvmd";

    /// <summary>
    /// The first mass-storage function folder under functions/ (PiKVM's is <c>mass_storage.usb0</c>). Drives
    /// are discovered from every <c>mass_storage.*</c> function of the gadget (kvmd's extra drives
    /// <c>mass_storage.usb1…</c> included); a built gadget names its further functions by counting on
    /// (<c>mass_storage.usb1</c>, …).
    /// </summary>
    [Required]
    [RegularExpression(@"^mass_storage\.[A-Za-z0-9_]*[0-9]$", ErrorMessage = "Gadget:FunctionName must look like mass_storage.usb0 (ending in a number).")]
    public string FunctionName { get; set; } = "mass_storage.usb0";

    /// <summary>Functions the agent must leave alone even though they are mass-storage functions of the gadget.</summary>
    public string[] IgnoreFunctions { get; set; } = [];

    /// <summary>
    /// Build and bind the gadget at start when it does not exist (a Pi without kvmd). Leave false to attach
    /// to a gadget someone else builds, such as PiKVM's kvmd-otg.
    /// </summary>
    public bool Create { get; set; }

    /// <summary>Mass-storage functions of a gadget the agent builds; each is a drive the host sees as its own device.</summary>
    [Range(1, DriveLimits.MaxDrives)]
    public int Functions { get; set; } = 1;

    /// <summary>LUNs per function of a gadget the agent builds.</summary>
    [Range(1, DriveLimits.MaxDrives)]
    public int Luns { get; set; } = 1;

    /// <summary>Drive indexes of a built gadget that present as CD-ROM drives (a host learns a LUN's type when it enumerates).</summary>
    public int[] CdromLuns { get; set; } = [];

    /// <summary>UDC to bind; empty picks the first one in <see cref="UdcClassRoot"/>.</summary>
    public string Udc { get; set; } = string.Empty;

    [RegularExpression("^0x[0-9a-fA-F]{4}$")]
    public string VendorId { get; set; } = "0x1d6b";

    [RegularExpression("^0x[0-9a-fA-F]{4}$")]
    public string ProductId { get; set; } = "0x0104";

    public string Manufacturer { get; set; } = "MsdFleet";
    public string Product { get; set; } = "Virtual Media";

    /// <summary>Where UDCs are listed, for the host side's state.</summary>
    [Required]
    public string UdcClassRoot { get; set; } = "/sys/class/udc";

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (Functions * Luns > DriveLimits.MaxDrives)
            yield return new ValidationResult($"Gadget:Functions × Gadget:Luns is {Functions * Luns}; at most {DriveLimits.MaxDrives} drives are supported.", [nameof(Functions), nameof(Luns)]);
        foreach (var lun in CdromLuns)
            if (lun < 0 || lun >= Functions * Luns)
                yield return new ValidationResult($"Gadget:CdromLuns names drive {lun}, but a built gadget has drives 0..{Functions * Luns - 1}.", [nameof(CdromLuns)]);
    }
}
