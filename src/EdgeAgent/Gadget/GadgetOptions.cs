using System.ComponentModel.DataAnnotations;

namespace MsdFleet.EdgeAgent.Gadget;

/// <summary>Bound from <c>Gadget</c>: which configfs gadget and mass-storage function this agent drives.</summary>
public sealed class GadgetOptions
{
    public const string Section = "Gadget";

    /// <summary>Where configfs is mounted; tests point this at a directory tree laid out the same way.</summary>
    [Required]
    public string ConfigfsRoot { get; set; } = "/sys/kernel/config";

    /// <summary>Gadget folder under usb_gadget/ (PiKVM's is <c>kvmd</c>).</summary>
    [Required]
    public string GadgetName { get; set; } = "kvmd";

    /// <summary>Function folder under functions/ (PiKVM's is <c>mass_storage.usb0</c>).</summary>
    [Required]
    public string FunctionName { get; set; } = "mass_storage.usb0";

    /// <summary>
    /// Build and bind the gadget at start when it does not exist (a Pi without kvmd). Leave false to attach
    /// to a gadget someone else builds, such as PiKVM's kvmd-otg.
    /// </summary>
    public bool Create { get; set; }

    /// <summary>LUNs of a gadget the agent builds.</summary>
    [Range(1, 8)]
    public int Luns { get; set; } = 1;

    /// <summary>LUNs of a gadget the agent builds that present as CD-ROM drives (a host learns a LUN's type when it enumerates).</summary>
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
}
