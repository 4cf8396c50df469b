"""The technician CLI: identity and enrollment, the demo, and the commands around them."""
