#pragma once
/// @file
/// @brief `Topology`: what the VM is made of (vCPUs, buses, PCI functions, their BARs and MSI-X routes), as data,
///        and as a Graphviz graph for `--dump-topology`.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vmm::machine {

/// @brief One BAR placed on a bus.
struct TopologyBar {
  std::uint8_t index = 0;  ///< BAR0..BAR5.
  bool io = false;         ///< On the I/O bus (else MMIO).
  std::uint64_t base = 0;  ///< Where it is.
  std::uint64_t size = 0;  ///< How large.
};

/// @brief One MSI-X vector and where KVM sends it.
struct TopologyVector {
  std::uint16_t vector = 0;              ///< Table entry.
  std::optional<std::uint32_t> gsi;      ///< Its GSI route, if it has one now.
  std::optional<std::uint64_t> address;  ///< The message the guest programmed (none while masked or unset).
  std::optional<std::uint32_t> data;     ///< Its data.
};

/// @brief One PCI function on bus 0.
struct TopologyPciFunction {
  std::uint8_t slot = 0;                ///< Device number; function 0.
  std::string name;                     ///< "virtio-blk", "host-bridge", "vfio 0000:00:05.0".
  std::uint16_t vendor = 0;             ///< Vendor ID.
  std::uint16_t device = 0;             ///< Device ID.
  std::uint32_t class_code = 0;         ///< Class/subclass/prog-if.
  std::string backend;                  ///< What serves it: "disk.img", "tap vmtap0", "vhost-user /tmp/s".
  std::vector<TopologyBar> bars;        ///< Placed BARs.
  std::vector<TopologyVector> vectors;  ///< MSI-X vectors (empty for devices without MSI-X).
};

/// @brief A device on the I/O or MMIO bus outside PCI (the UART, the i8042, config mechanism #1).
struct TopologyBusDevice {
  std::string bus;         ///< "io" or "mmio".
  std::string name;        ///< The bus entry's name.
  std::uint64_t base = 0;  ///< First port or address.
  std::uint64_t size = 0;  ///< Length.
};

/// @brief The whole machine.
struct Topology {
  std::uint32_t vcpus = 0;                     ///< vCPUs (APIC IDs 0..vcpus-1).
  std::uint64_t ram_bytes = 0;                 ///< Guest RAM.
  std::vector<TopologyBusDevice> bus_devices;  ///< Non-PCI devices (PCI BARs excluded).
  std::vector<TopologyPciFunction> pci;        ///< PCI functions by slot.
};

/// @brief The topology as a Graphviz digraph: vCPUs, the irqchip, the buses, each PCI function with its BARs and its
///        MSI-X vectors' GSI routes. Node labels name PCI functions "00:SS.0 vvvv:dddd" so scripts can compare them
///        with what the guest sees in /sys/bus/pci/devices.
[[nodiscard]] std::string to_dot(const Topology& topology);

}  // namespace vmm::machine
