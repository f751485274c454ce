//
// Copyright (C) 2025 Nethesis S.r.l.
// SPDX-License-Identifier: GPL-3.0-or-later
//
// Strings live in public/i18n/<lang>/translation.json (Weblate's nested JSON);
// each language is its own chunk, loaded only when asked for.
export async function loadMessages(lang) {
  if (!/^[a-z]{2}$/.test(lang)) {
    return null;
  }
  try {
    const module = await import(
      /* webpackChunkName: "lang-[request]" */ `../../public/i18n/${lang}/translation.json`
    );
    return module.default;
  } catch (error) {
    return null; // no strings for this language: English is the fallback
  }
}
