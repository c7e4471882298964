// Renders every <pre class="mermaid"> block on page load, offline (mermaid.min.js is served
// with the book). Colours follow the book's palette; a theme change reloads the page so the
// diagrams are redrawn in the new colours.
(() => {
    const darkThemes = ['ayu', 'navy', 'coal'];
    const classes = document.documentElement.classList;
    const dark = darkThemes.some((t) => classes.contains(t));
    mermaid.initialize({
        startOnLoad: true,
        theme: dark ? 'base' : 'default',
        themeVariables: dark ? {
            darkMode: true,
            background: '#020617',
            primaryColor: '#0f172a',
            primaryTextColor: '#f8fafc',
            primaryBorderColor: '#14b8a6',
            lineColor: '#94a3b8',
            secondaryColor: '#1e3a8a',
            tertiaryColor: '#0f172a',
            fontFamily: 'Inter, system-ui, sans-serif',
        } : { fontFamily: 'Inter, system-ui, sans-serif' },
    });
    for (const id of ['default_theme', 'light', 'rust', 'coal', 'navy', 'ayu']) {
        const button = document.getElementById('mdbook-theme-' + id);
        if (button) {
            button.addEventListener('click', () => window.location.reload());
        }
    }
})();
