/** Small stroke icons (inline SVG, so they look the same whatever fonts a machine has). */
import type { ReactNode } from "react";

const PATHS: Record<string, ReactNode> = {
  input: (
    <>
      <path d="M3 12h12" />
      <path d="M11 8l4 4-4 4" />
      <path d="M19 5v14" />
    </>
  ),
  router: (
    <>
      <circle cx="6" cy="18" r="2.5" />
      <circle cx="6" cy="6" r="2.5" />
      <circle cx="18" cy="6" r="2.5" />
      <path d="M6 8.5v7" />
      <path d="M18 8.5a9 9 0 0 1-9.5 9" />
    </>
  ),
  llm: <path d="M12 3l1.9 5.1L19 10l-5.1 1.9L12 17l-1.9-5.1L5 10l5.1-1.9z M19 16l.8 2.2L22 19l-2.2.8L19 22l-.8-2.2L16 19l2.2-.8z" />,
  image: (
    <>
      <rect x="3" y="3" width="18" height="18" rx="2" />
      <circle cx="9" cy="9" r="2" />
      <path d="M21 15l-5-5L5 21" />
    </>
  ),
  db: (
    <>
      <ellipse cx="12" cy="5" rx="8" ry="3" />
      <path d="M4 5v14a8 3 0 0 0 16 0V5" />
      <path d="M4 12a8 3 0 0 0 16 0" />
    </>
  ),
  aggregator: <path d="M18 7V4H6l6 8-6 8h12v-3" />,
  api: (
    <>
      <circle cx="12" cy="12" r="9" />
      <path d="M3 12h18" />
      <path d="M12 3a14 14 0 0 1 0 18a14 14 0 0 1 0-18" />
    </>
  ),
  source: <path d="M12 22v-5 M9 8V2 M15 8V2 M18 8v4a6 6 0 0 1-12 0V8z" />,
  queue: (
    <>
      <path d="M12 14l4-4" />
      <path d="M3.3 19a10 10 0 1 1 17.4 0" />
    </>
  ),
  unknown: <circle cx="12" cy="12" r="8" />,
  // replay controls
  first: (
    <>
      <path d="M6 5v14" />
      <path d="M18 6l-8 6 8 6z" />
    </>
  ),
  prev: <path d="M15 6l-6 6 6 6" />,
  play: <path d="M7 5l12 7-12 7z" />,
  pause: <path d="M8 5v14 M16 5v14" />,
  next: <path d="M9 6l6 6-6 6" />,
  last: (
    <>
      <path d="M18 5v14" />
      <path d="M6 6l8 6-8 6z" />
    </>
  ),
};

export function Icon({ name, className = "h-4 w-4" }: { name: string; className?: string }) {
  return (
    <svg viewBox="0 0 24 24" fill="none" stroke="currentColor" strokeWidth={2} strokeLinecap="round" strokeLinejoin="round" className={className} aria-hidden="true">
      {PATHS[name] ?? PATHS.unknown}
    </svg>
  );
}
