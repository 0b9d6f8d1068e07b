"""What the user can do, as plain functions (no Gradio): each takes the session / workspace / model host and
returns a `Reply` whose message describes the state after the action. The tabs in app/tabs only wire them."""
