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

    /// <summary>Where UDCs are listed, for the host side's state.</summary>
    [Required]
    public string UdcClassRoot { get; set; } = "/sys/class/udc";
}
