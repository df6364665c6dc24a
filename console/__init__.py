"""SOP Console: reverse SSH tunnels for appliances behind NAT, and the console to run them."""

__version__ = "0.1.0"
