"""QueryMeld Studio Gradio app: layout (ui), handlers, per-session state, workspace, export, fine-tune driver."""
