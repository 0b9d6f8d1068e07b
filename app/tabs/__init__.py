"""One module per tab: each builds its part of the layout and wires its events over app.actions."""
