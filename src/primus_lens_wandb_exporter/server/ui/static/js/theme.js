// Light / dark mode: follows the system's prefers-color-scheme until the user picks one with
// the top bar's toggle; the pick is kept in localStorage. The effective theme is set as
// <html data-theme="light|dark">, which style.css keys its colours on; charts read their
// axis and grid colours from the same CSS variables (charts.js) and are redrawn on a switch.

const KEY = 'primus-lens-theme';
const media = window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null;

function stored() {
  try { const v = localStorage.getItem(KEY); return v === 'dark' || v === 'light' ? v : null; } catch { return null; }
}

export function effectiveTheme() {
  return stored() || (media && media.matches ? 'dark' : 'light');
}

function apply() {
  const theme = effectiveTheme();
  document.documentElement.dataset.theme = theme;
  const button = document.getElementById('theme-toggle');
  if (button) {
    button.setAttribute('aria-label', theme === 'dark' ? 'Switch to light mode' : 'Switch to dark mode');
    button.dataset.theme = theme;
  }
  // uPlot draws on a canvas: redraw the charts with the new axis colours.
  for (const el of document.querySelectorAll('.plot')) if (el.__lens && el.__lens.chart) el.__lens.chart.redraw(false, true);
}

export function initTheme() {
  apply();
  if (media && media.addEventListener) media.addEventListener('change', apply);
  const button = document.getElementById('theme-toggle');
  if (button) {
    button.addEventListener('click', () => {
      try { localStorage.setItem(KEY, effectiveTheme() === 'dark' ? 'light' : 'dark'); } catch { /* private mode */ }
      apply();
    });
  }
}
